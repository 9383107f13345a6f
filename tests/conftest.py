"""Shared fixtures.

``stack``: the real native stack (Collector, Prometheus, Alertmanager, pager) on its
default ports, built if needed and started once per session, or the one already running
(``make demo`` leaves it up: the suite then runs against it, as the README says). It has
history — the demo's pages, earlier runs' TSDB — so tests on it assert only about their
own series (a unique ``service.name``) and their own alerts.

``own_stack``: a pristine stack for one test module (temp data directories, free ports,
configs rendered for them), for tests whose assertions need an empty TSDB or a quiet
Alertmanager. Tests that use either carry ``@pytest.mark.stack``.

Several pytest sessions may share the one stack on the default ports (engineers run
suites side by side). Each session holds a lease file in ``.cache/stack/leases/``
while it uses the stack; the last session to leave stops it, but only if a fixture
started it. A stack started by hand (``redline stack up``) is always left running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import hypothesis.strategies  # noqa: F401  (see below)
import pytest

from redline_operator.stack import Ports, Stack, StackError

# hypothesis' pytest plugin imports its strategies lazily, at session finish when no test
# used them; pytest then assertion-rewrites them from deep in its hook stack, and CPython
# 3.11.7's compiler fails there ("AST constructor recursion depth mismatch"), failing a
# green run of any subset without hypothesis tests. Importing them here, at a shallow
# depth, avoids it.

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def stack_binaries(repo_root: Path) -> Path:
    """Build the stack's binaries unless they are up to date; returns ``.cache/bin``.

    Skips only when Go is not installed: without it the binaries cannot be built here.
    A build that fails for any other reason fails the tests that need it.
    """
    if shutil.which("go") is None:
        pytest.skip("`go` is not on PATH, so the Collector/Prometheus/Alertmanager cannot be built")
    try:
        for _ in Stack(repo_root).build():
            pass
    except StackError as exc:
        pytest.fail(f"building the stack failed:\n{exc}")
    return repo_root / ".cache" / "bin"


def _live_leases(leases: Path) -> list[Path]:
    live = []
    for lease in leases.glob("*"):
        if Path(f"/proc/{lease.name}").exists():
            live.append(lease)
        else:  # a session that crashed without cleaning up
            lease.unlink(missing_ok=True)
    return live


@pytest.fixture(scope="session")
def stack(stack_binaries: Path, repo_root: Path) -> Iterator[Stack]:
    """The native stack on its default ports, up and ready for the whole session."""
    running = Stack(repo_root)
    leases = running.state_dir / "leases"
    leases.mkdir(parents=True, exist_ok=True)
    mine = leases / str(os.getpid())
    mine.touch()
    started_by_fixture = running.state_dir / "started-by-test-fixture"
    try:
        if running.up():
            started_by_fixture.touch()
        yield running
    finally:
        mine.unlink(missing_ok=True)
        if not _live_leases(leases) and started_by_fixture.exists():
            started_by_fixture.unlink(missing_ok=True)
            running.down()


def free_ports() -> Ports:
    """A Ports set of currently free ephemeral ports, for a second, throwaway stack."""
    socks = []
    try:
        for _ in fields(Ports):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        numbers = [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
    return Ports(**{f.name: n for f, n in zip(fields(Ports), numbers, strict=True)})


@contextlib.contextmanager
def isolated_stack(root: Path, state_dir: Path, attempts: int = 3) -> Iterator[Stack]:
    """A stack of its own on free ports under ``state_dir``; stopped on exit.

    A free port can be taken by someone else between the check and the bind: then it
    starts again on other ports, in a fresh directory.
    """
    for attempt in range(attempts):
        stack = Stack(root, ports=free_ports(), state_dir=state_dir / f"try{attempt}")
        try:
            stack.up()
            break
        except StackError:
            if attempt == attempts - 1:
                raise
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="module")
def own_stack(stack_binaries: Path, repo_root: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A pristine stack for this module: fresh TSDB, Alertmanager state and pager."""
    with isolated_stack(repo_root, tmp_path_factory.mktemp("own-stack")) as stack:
        yield stack
