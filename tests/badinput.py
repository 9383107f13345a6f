"""Shared by the bad-input tests and ``benchmarks/badinput_campaign.py``.

One bad input is a ``redline.yaml`` (or raw bytes) in a scratch project. ``run_cli`` runs
``redline <command>`` on it as a user would (a subprocess, so a traceback is what the
user would see), and ``classify`` sorts the outcome into exactly one of:

``ok``
    exit 0, and every generated rule file, promtool test and Alertmanager config passes
    the real ``promtool check rules``, ``promtool test rules`` and ``amtool check-config``.
``clear_error``
    exit != 0, stderr names the config file, no traceback, and no file changed.
``traceback``
    a Python traceback reached stderr.
``silent``
    exit 0, but the output fails promtool/amtool (accepted nonsense).
``damage``
    exit != 0, but files under the project changed (half-written output).
``unclear``
    exit != 0 without a traceback, but without an ``error:`` line saying what is wrong.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".cache" / "bin"
# The console script, exactly what a user runs.
REDLINE = [str(Path(sys.executable).parent / "redline")]

#: The config every mutation starts from (the shape of the committed redline.yaml).
BASE = {
    "version": 1,
    "evaluation_interval": "5s",
    "targets": [{
        "name": "sim",
        "match": {"server_address": "127.0.0.1", "model": "sim-model"},
        "saturation_concurrency": 16,
        "warn_fraction": 0.7,
        "page_fraction": 0.85,
        "durations": {"warn": "1m", "page": "30s"},
        "slo": {"ttft_p95_seconds": 1.0, "latency_p95_seconds": 5.0, "error_ratio": 0.01},
        "retry_storm_ratio": 0.2,
    }],
    "pager": {
        "receivers": [{"type": "webhook", "name": "local-pager",
                       "url": "http://127.0.0.1:9096/alerts"}],
        "page_receiver": "local-pager",
        "warn_receiver": "local-pager",
        "group_wait": "5s",
    },
}

OUTCOMES = ("ok", "clear_error", "traceback", "silent", "damage", "unclear")


def yaml_text(data: object) -> str:
    y = YAML(typ="safe", pure=True)
    y.allow_unicode = True
    buf = io.StringIO()
    y.dump(data, buf)
    return buf.getvalue()


def set_key(data: dict, path: tuple, value: object) -> dict:
    """A deep copy of ``data`` with ``path`` (keys and list indexes) set to ``value``."""
    import copy

    out = copy.deepcopy(data)
    node = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


def snapshot(root: Path) -> dict[str, str]:
    """Path -> sha256 of every file under ``root`` (what "no file changed" compares)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def make_project(tmp: Path, config: str | bytes) -> Path:
    """A scratch project (returned): the config plus a copy of the committed generated files."""
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "redline.yaml"
    if isinstance(config, bytes):
        cfg.write_bytes(config)
    else:
        cfg.write_text(config, encoding="utf-8")
    for sub in ("alerts", "dashboards"):
        if not (tmp / sub).exists():
            shutil.copytree(REPO / sub, tmp / sub)
    (tmp / "compose").mkdir(exist_ok=True)
    shutil.copy(REPO / "compose" / "alertmanager.yml", tmp / "compose" / "alertmanager.yml")
    return tmp


@dataclass
class Result:
    outcome: str
    command: list[str]
    code: int
    stderr: str
    detail: str = ""
    changed: list[str] = field(default_factory=list)
    stdout: str = ""


def run_cli(args: list[str], cwd: Path, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([*REDLINE, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env, errors="replace")


def run_in_process(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``redline.cli.main(args)`` in this process (no interpreter start-up: quick enough
    for property tests); an exception escaping ``main`` is rendered as the traceback the
    user would have seen."""
    import contextlib
    import traceback

    from redline_operator.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - exactly what the user would see
                err.write(traceback.format_exc())
                code = 1
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def tool(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, errors="replace")


def validate_alerts(project: Path, *, long_tests: bool = False) -> str:
    """'' when the generated files pass promtool and amtool, else what failed."""
    alerts = project / "alerts"
    rules = sorted(str(p) for p in alerts.glob("*.rules.yml"))
    checks = [("promtool", "check", "rules", *rules)]
    for test in sorted(alerts.glob("tests/*.test.yml")):
        if long_tests or ".long." not in test.name:
            checks.append(("promtool", "test", "rules", str(test)))
    for am in (alerts / "alertmanager.yml", project / "compose" / "alertmanager.yml"):
        checks.append(("amtool", "check-config", str(am)))
    for check in checks:
        done = tool(*check, cwd=project)
        if done.returncode != 0:
            return f"{' '.join(check[:3])}: {(done.stdout + done.stderr)[-1500:]}"
    return ""


def classify(project: Path, command: list[str], *, validate: bool = True,
             long_tests: bool = False, timeout: float = 120,
             in_process: bool = False) -> Result:
    """Run ``redline <command>`` in ``project`` and sort the outcome (see module doc)."""
    before = snapshot(project)
    try:
        done = (run_in_process(command, project) if in_process
                else run_cli(command, project, timeout=timeout))
    except subprocess.TimeoutExpired:
        return Result("silent", command, -1, "", f"ran over {timeout:g} s")
    after = snapshot(project)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    out = done.stdout
    if "Traceback (most recent call last)" in done.stderr + out:
        return Result("traceback", command, done.returncode, done.stderr, changed=changed,
                      stdout=out)
    if done.returncode != 0:
        if changed:
            return Result("damage", command, done.returncode, done.stderr, changed=changed,
                          stdout=out)
        if "error:" not in done.stderr:
            return Result("unclear", command, done.returncode, done.stderr, stdout=out)
        return Result("clear_error", command, done.returncode, done.stderr, stdout=out)
    if validate and command[0] == "rules" and "--check" not in command:
        problem = validate_alerts(project, long_tests=long_tests)
        if problem:
            return Result("silent", command, 0, done.stderr, problem, changed, out)
    return Result("ok", command, 0, done.stderr, changed=changed, stdout=out)
