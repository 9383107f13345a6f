"""The native stack as one object: build, up, down, status.

Example::

    from redline_operator.stack import Stack

    with Stack() as stack:                 # up() on enter (no-op if already up), down() on exit
        print(stack.prometheus_url)        # http://127.0.0.1:9090
        print(stack.otlp_endpoint)         # http://127.0.0.1:4318 (OTLP/HTTP)
        print(stack.pages())               # webhooks the local pager received

A stack that was already running when the context was entered is left running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from redline_operator.stack import processes, thanos
from redline_operator.stack.build import BuildResult, build_all
from redline_operator.stack.components import Component, child_env, components
from redline_operator.stack.configs import render_all
from redline_operator.stack.ports import HOST, PortInUseError, Ports, check_free

__all__ = ["Stack", "StackError", "ComponentStatus", "find_root"]


class StackError(Exception):
    """Something the user can act on: a missing binary, a taken port, a failed start."""


@dataclass(frozen=True)
class ComponentStatus:
    """One row of ``redline stack status``.

    Attributes:
        name: Component name.
        pid: Its pid when running (verified against the pid file), else None.
        ports: Ports it listens on.
        ready: Whether its readiness endpoint answers 200.
    """

    name: str
    pid: int | None
    ports: tuple[int, ...]
    ready: bool


def find_root(start: Path | None = None) -> Path:
    """The repository root: ``$REDLINE_ROOT`` or the nearest parent holding the configs."""
    if os.environ.get("REDLINE_ROOT"):
        return Path(os.environ["REDLINE_ROOT"]).resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "collector" / "manifest.yaml").is_file() and (
            candidate / "prometheus" / "prometheus.yml"
        ).is_file():
            return candidate
    raise StackError(
        f"no redline checkout found at or above {here} (looked for collector/manifest.yaml "
        "and prometheus/prometheus.yml); run from the repository or set REDLINE_ROOT"
    )


class Stack:
    """Collector, Prometheus, Alertmanager and the local pager, on loopback.

    Args:
        root: Repository root; found from the working directory when None.
        ports: Listening ports; ``Ports.from_env()`` when None.
        state_dir: pid files, logs and data; ``$REDLINE_STACK_DIR`` or
            ``<root>/.cache/stack`` when None.
        bin_dir: The Go binaries; ``<root>/.cache/bin`` when None.
        ready_timeout: Seconds each component gets to become ready.
        backend: ``"prometheus"`` (one Prometheus) or ``"thanos"`` (receivers, query,
            ruler: :mod:`redline_operator.stack.thanos`); None: the one that ``up`` last
            started in ``state_dir``, else ``"prometheus"``.
    """

    def __init__(
        self,
        root: Path | str | None = None,
        *,
        ports: Ports | None = None,
        state_dir: Path | None = None,
        bin_dir: Path | None = None,
        ready_timeout: float = 30.0,
        backend: str | None = None,
    ) -> None:
        self.root = Path(root).resolve() if root is not None else find_root()
        try:
            self.ports = ports if ports is not None else Ports.from_env()
        except ValueError as exc:
            raise StackError(str(exc)) from None
        if state_dir is None and os.environ.get("REDLINE_STACK_DIR"):
            state_dir = Path(os.environ["REDLINE_STACK_DIR"]).resolve()
        self.state_dir = state_dir or self.root / ".cache" / "stack"
        self.bin_dir = bin_dir
        self.ready_timeout = ready_timeout
        try:
            self.backend = thanos.resolve_backend(backend, self.state_dir)
            self.thanos_ports = thanos.ThanosPorts.from_env()
        except ValueError as exc:
            raise StackError(str(exc)) from None
        # Popen handles of children this object started, so down() can reap them.
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._entered_running = False

    # -- addresses -------------------------------------------------------------------

    @property
    def prometheus_url(self) -> str:
        return f"http://{HOST}:{self.ports.prometheus}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{HOST}:{self.ports.alertmanager}"

    @property
    def pager_url(self) -> str:
        return f"http://{HOST}:{self.ports.pager}"

    @property
    def otlp_endpoint(self) -> str:
        """OTLP/HTTP base URL (the SDK appends ``/v1/metrics``)."""
        return f"http://{HOST}:{self.ports.collector_http}"

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"http://{HOST}:{self.ports.collector_grpc}"

    @property
    def pages_file(self) -> Path:
        return self.state_dir / "pages.jsonl"

    def components(self) -> list[Component]:
        if self.backend == "thanos":
            return thanos.components(self.root, self.state_dir, self.ports, self.bin_dir,
                                     self.thanos_ports)
        return components(self.root, self.state_dir, self.ports, self.bin_dir)

    def _port(self, field: str) -> tuple[int, str]:
        """A component's port by field name, and the variable that moves it."""
        if hasattr(self.ports, field):
            return getattr(self.ports, field), Ports.env_var(field)
        return getattr(self.thanos_ports, field), thanos.ThanosPorts.env_var(field)

    def _pid_file(self, c: Component) -> Path:
        return self.state_dir / f"{c.name}.pid"

    def _log_file(self, c: Component) -> Path:
        return self.state_dir / f"{c.name}.log"

    def _running(self, c: Component) -> processes.PidRecord | None:
        record = processes.read_pid(self._pid_file(c))
        return record if record is not None and processes.is_alive(record) else None

    # -- lifecycle -------------------------------------------------------------------

    def build(self, on_start: Callable[[str], None] | None = None) -> Iterator[BuildResult]:
        """Build missing or outdated binaries (see redline_operator.stack.build.build_all);
        Thanos too when this stack's backend is ``thanos``."""
        from redline_operator.stack.build import BuildError

        try:
            yield from build_all(self.root, on_start=on_start,
                                 thanos=self.backend == "thanos")
        except BuildError as exc:
            raise StackError(str(exc)) from None

    def up(self, log: Callable[[str], None] = lambda _m: None) -> bool:
        """Start every component that is not running and wait until all are ready.

        All-or-nothing: when one component cannot start, the ones this call started
        are stopped again before StackError is raised.

        Args:
            log: Receives one line per step.

        Returns:
            False when everything was already running (nothing done), else True.

        Raises:
            StackError: A binary is missing, a port is taken, or a component failed.
        """
        comps = self.components()
        todo = [c for c in comps if self._running(c) is None]
        if not todo:
            log("stack already running; nothing to do")
            return False
        self._preflight(todo)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        thanos.record_backend(self.state_dir, self.backend)
        try:
            render_all(self.root, self.state_dir, self.ports)
        except (OSError, ValueError) as exc:
            raise StackError(f"cannot render the configs for moved ports into "
                             f"{self.state_dir}: {exc}") from None
        started: list[Component] = []
        try:
            for c in todo:
                # Listed before it starts: a component that dies while booting still has
                # a pid file (and maybe a live child) to clean up.
                started.append(c)
                self._start(c, log)
        except BaseException:
            for c in reversed(started):
                self._stop(c)
            raise
        return True

    def _preflight(self, todo: list[Component]) -> None:
        """Check every binary and port before starting anything."""
        for c in todo:
            if c.binary is not None and not os.access(c.binary, os.X_OK):
                raise StackError(
                    f"{c.name} binary not found at {c.binary}; run `redline stack build` "
                    "(or `make stack`) first"
                )
        for c in todo:
            for port_field in c.ports:
                port, env_var = self._port(port_field)
                try:
                    check_free(port, c.name, env_var)
                except PortInUseError as exc:
                    raise StackError(str(exc)) from None

    def _start(self, c: Component, log: Callable[[str], None]) -> None:
        if c.data_dir is not None:
            try:
                c.data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StackError(
                    f"cannot create {c.name}'s data directory {c.data_dir}: {exc}"
                ) from None
        self._pid_file(c).unlink(missing_ok=True)
        start = time.monotonic()
        proc = processes.spawn(
            c.argv,
            pid_file=self._pid_file(c),
            log_file=self._log_file(c),
            marker=c.marker,
            env=child_env(c),
            cwd=self.root,
        )
        self._procs[c.name] = proc
        try:
            processes.wait_ready(c.name, c.ready_url, proc, self._log_file(c), self.ready_timeout)
        except processes.ReadinessError as exc:
            raise StackError(str(exc)) from None
        log(f"{c.name} ready in {time.monotonic() - start:.1f}s (pid {proc.pid})")

    def down(self, log: Callable[[str], None] = lambda _m: None) -> bool:
        """Stop every component this stack's pid files name, in reverse start order.

        Only a process whose pid, start time and command line match its pid file is
        signalled. Pid files are removed.

        Returns:
            True when at least one process was stopped.
        """
        stopped = False
        for c in reversed(self.components()):
            outcome = self._stop(c)
            if outcome is not None:
                log(f"{c.name}: {outcome}")
                stopped = stopped or outcome != "not running"
        thanos.forget_backend(self.state_dir)
        return stopped

    def _stop(self, c: Component) -> str | None:
        pid_file = self._pid_file(c)
        record = processes.read_pid(pid_file)
        proc = self._procs.pop(c.name, None)
        if record is None:
            if proc is not None:  # started but its pid file vanished: still ours
                proc.kill()
                proc.wait()
            return None
        outcome = processes.stop(record, proc=proc)
        pid_file.unlink(missing_ok=True)
        return outcome

    def status(self) -> list[ComponentStatus]:
        """Each component's pid (when running) and readiness."""
        rows = []
        for c in self.components():
            record = self._running(c)
            # Ready only when the process of the pid file answers on its own port.
            port = urlsplit(c.ready_url).port
            ready = (record is not None and port is not None
                     and processes.listens_on(record.pid, port) and processes.probe(c.ready_url))
            ports = tuple(self._port(p)[0] for p in c.ports)
            rows.append(ComponentStatus(c.name, record.pid if record else None, ports, ready))
        return rows

    def is_up(self) -> bool:
        """Whether every component runs and is ready."""
        return all(row.ready for row in self.status())

    def clean(self) -> None:
        """Delete stored data (TSDB, Alertmanager state, pages); the stack must be down."""
        if any(row.pid for row in self.status()):
            raise StackError("stop the stack first (`redline stack down`)")
        shutil.rmtree(self.state_dir, ignore_errors=True)

    # -- helpers for demos and tests -------------------------------------------------

    def pages(self) -> list[dict[str, Any]]:
        """Webhook payloads the local pager received, oldest first."""
        response = httpx.get(f"{self.pager_url}/alerts", timeout=5.0)
        response.raise_for_status()
        return response.json()["pages"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Run an instant PromQL query; returns the ``data.result`` list.

        Raises:
            StackError: Prometheus rejected the query (the message has its error).
        """
        response = httpx.get(
            f"{self.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10.0
        )
        body = response.json()
        if body.get("status") != "success":
            raise StackError(f"query {promql!r} failed: {body.get('error', body)}")
        return body["data"]["result"]

    def __enter__(self) -> Stack:
        self._entered_running = not self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._entered_running:
            self.down()
