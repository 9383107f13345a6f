"""Detached child processes tracked by pid files.

A process started here runs in its own session, so it outlives the ``redline stack
up`` that started it and ignores the terminal's Ctrl-C. Its pid file records the pid,
the process start time (from ``/proc``), a marker and the full command line; ``stop``
signals only a process whose identity is proven: the start time is known and equal, the
marker is non-empty and the command line is exactly the recorded one. A recycled pid, or
a pid file edited to name someone else's process, is never signalled.

Readiness is the component's own: :func:`listens_on` checks that the port answering the
readiness probe is held by that very process, not by whatever else took the port.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

__all__ = [
    "PidRecord",
    "spawn",
    "read_pid",
    "is_alive",
    "stop",
    "wait_ready",
    "probe",
    "listens_on",
    "ReadinessError",
]


class ReadinessError(Exception):
    """A started process exited or did not become ready in time."""


@dataclass(frozen=True)
class PidRecord:
    """What a pid file holds.

    Attributes:
        pid: Process id.
        start_ticks: Start time in clock ticks since boot (``/proc/<pid>/stat`` field 22).
        marker: A string that must appear in the process' command line.
        argv: The full command line, for humans reading the file.
    """

    pid: int
    start_ticks: int
    marker: str
    argv: list[str]


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    # The command name (field 2) may hold spaces or parentheses: split after its ')'.
    rest = stat[stat.rindex(")") + 2 :].split()
    if rest[0] == "Z":  # a zombie has exited; only its exit status is left
        return None
    return int(rest[19])


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", errors="replace")


def spawn(
    argv: list[str], *, pid_file: Path, log_file: Path, marker: str, env: dict[str, str], cwd: Path
) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached, logging to ``log_file``, and write its pid file.

    Args:
        argv: Command line; ``argv[0]`` must exist.
        pid_file: Written atomically once the process exists.
        log_file: stdout and stderr, appended (a restart keeps the earlier run's log).
        marker: Substring of the command line that identifies the process later.
        env: Full environment of the child.
        cwd: Working directory of the child.

    Returns:
        The Popen handle; keep it to reap the child if this process outlives it.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ticks = _start_ticks(proc.pid) or 0
    record = PidRecord(proc.pid, ticks, marker, argv)
    tmp = pid_file.with_suffix(".pid.tmp")
    tmp.write_text(json.dumps(asdict(record)) + "\n", encoding="utf-8")
    tmp.replace(pid_file)
    return proc


def read_pid(pid_file: Path) -> PidRecord | None:
    """The record in ``pid_file``, or None when it is absent or unreadable."""
    try:
        data = json.loads(pid_file.read_text(encoding="utf-8"))
        return PidRecord(int(data["pid"]), int(data["start_ticks"]), data["marker"], data["argv"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_alive(record: PidRecord) -> bool:
    """Whether the process of ``record`` still runs and is provably the same process."""
    if record.pid <= 1 or record.start_ticks <= 0 or not record.marker or not record.argv:
        return False  # nothing to prove identity with: never ours
    if record.pid == os.getpid():
        return False
    ticks = _start_ticks(record.pid)
    if ticks is None or ticks != record.start_ticks:
        return False
    cmdline = _cmdline(record.pid)
    return record.marker in cmdline and cmdline.rstrip() == " ".join(record.argv)


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A":  # 0A: LISTEN
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` itself holds the listening TCP socket on ``port``."""
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def stop(
    record: PidRecord, *, proc: subprocess.Popen[bytes] | None = None, timeout: float = 10.0
) -> str:
    """SIGTERM the process of ``record``, then SIGKILL it after ``timeout`` seconds.

    Args:
        record: From the pid file.
        proc: The Popen handle when this process started it, so the child is reaped.
        timeout: Seconds to wait after SIGTERM.

    Returns:
        ``"stopped"``, ``"killed"`` or ``"not running"``.
    """
    # Our own unreaped child is proven by its handle: its pid cannot be recycled yet.
    owned = proc is not None and proc.pid == record.pid and proc.poll() is None
    if not owned and not is_alive(record):
        if proc is not None:
            proc.poll()
        return "not running"
    try:
        os.kill(record.pid, signal.SIGTERM)
    except ProcessLookupError:
        return "not running"
    if _wait_gone(record, proc, timeout):
        return "stopped"
    try:
        os.kill(record.pid, signal.SIGKILL)
    except ProcessLookupError:
        return "stopped"
    _wait_gone(record, proc, 5.0)
    return "killed"


def _wait_gone(record: PidRecord, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            try:
                proc.wait(timeout=0.05)
                return True
            except subprocess.TimeoutExpired:
                continue
        if not is_alive(record):
            return True
        time.sleep(0.05)
    return False


def probe(url: str, timeout: float = 1.0) -> bool:
    """Whether GET ``url`` answers 200 within ``timeout`` seconds."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def wait_ready(
    name: str, url: str, proc: subprocess.Popen[bytes], log_file: Path, timeout: float
) -> float:
    """Poll ``url`` until it answers 200; fail fast when the process exits.

    Returns:
        Seconds it took.

    Raises:
        ReadinessError: The process exited or ``timeout`` passed; the message carries
            the tail of ``log_file``.
    """
    start = time.monotonic()
    while True:
        if probe(url, timeout=0.5):
            return time.monotonic() - start
        code = proc.poll()
        if code is not None:
            raise ReadinessError(
                f"{name} exited with code {code} before it was ready{_tail(log_file)}"
            )
        if time.monotonic() - start > timeout:
            raise ReadinessError(
                f"{name} was not ready at {url} after {timeout:.0f}s{_tail(log_file)}"
            )
        time.sleep(0.1)


def _tail(log_file: Path, lines: int = 12) -> str:
    try:
        text = log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"\n--- last lines of {log_file} ---\n" + "\n".join(text)
