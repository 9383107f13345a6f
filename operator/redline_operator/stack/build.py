"""Building the stack's binaries from their official Go modules.

Every binary is pinned here, once. A build writes ``<binary>.stamp`` beside the binary
in ``.cache/bin/``; a later build skips any binary whose stamp matches its pin, so
``redline stack build`` is cheap to run every time (``make stack``, CI).

Example::

    from redline_operator.stack.build import build_all
    for result in build_all(root):
        print(result.name, result.action, f"{result.seconds:.1f}s")
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BuildError",
    "BuildResult",
    "GoTool",
    "TOOLS",
    "COLLECTOR_BINARY",
    "COLLECTOR_VERSION",
    "build_all",
    "binary_path",
    "go_version",
]

#: Release train of the Collector builder, core components and contrib extension; must
#: match collector/manifest.yaml (v0.163+ needs a module the proxy does not serve).
COLLECTOR_VERSION = "v0.162.0"
#: Name of the Collector distribution (``dist.name`` in collector/manifest.yaml).
COLLECTOR_BINARY = "otelcol-redline"


class BuildError(Exception):
    """A binary could not be built; the message says which and what to do."""


@dataclass(frozen=True)
class GoTool:
    """A binary installed with ``go install <package>@<version>``.

    Attributes:
        name: Binary name in ``.cache/bin``.
        package: Go package path of the ``main`` package.
        version: Module version (a tag).
        tags: Go build tags.
        why: Why this version or these tags, for the build log and the docs.
    """

    name: str
    package: str
    version: str
    tags: str = ""
    why: str = ""
    #: Version that ``--version`` prints: ``go install`` leaves Prometheus' empty.
    release: str = ""

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"


# Prometheus v0.316.0 is Prometheus 3.16.0 (the Go module uses 0.x tags for 3.x
# releases). remove_all_sd drops every optional service-discovery plugin: only
# static_configs are used here, and one of them (nomad) pins a pseudo-version the
# module proxy no longer serves, so the default build fails.
# Alertmanager v0.31.1 is the newest release whose module still carries its
# compiled web UI; from v0.32 on, ui/app/dist is built by npm and absent from the
# module zip, so `go install` fails with "pattern app/dist: no matching files".
TOOLS: tuple[GoTool, ...] = (
    GoTool(
        "builder",
        "go.opentelemetry.io/collector/cmd/builder",
        COLLECTOR_VERSION,
        why="OpenTelemetry Collector builder (ocb)",
    ),
    GoTool(
        "prometheus",
        "github.com/prometheus/prometheus/cmd/prometheus",
        "v0.316.0",
        tags="remove_all_sd",
        why="Prometheus 3.16.0; static targets only",
        release="3.16.0",
    ),
    GoTool(
        "promtool",
        "github.com/prometheus/prometheus/cmd/promtool",
        "v0.316.0",
        tags="remove_all_sd",
        why="promtool of Prometheus 3.16.0",
        release="3.16.0",
    ),
    GoTool(
        "alertmanager",
        "github.com/prometheus/alertmanager/cmd/alertmanager",
        "v0.31.1",
        why="newest Alertmanager whose Go module embeds its UI",
        release="0.31.1",
    ),
    GoTool(
        "amtool",
        "github.com/prometheus/alertmanager/cmd/amtool",
        "v0.31.1",
        why="amtool of Alertmanager 0.31.1",
        release="0.31.1",
    ),
)


@dataclass(frozen=True)
class BuildResult:
    """What happened to one binary.

    Attributes:
        name: Binary name.
        action: ``"built"`` or ``"up to date"``.
        seconds: Wall-clock time spent (0 when up to date).
        stamp: The pin recorded in the stamp file.
    """

    name: str
    action: str
    seconds: float
    stamp: str


def binary_path(root: Path, name: str) -> Path:
    """Where the binary ``name`` lives once built."""
    return root / ".cache" / "bin" / name


def go_version() -> str:
    """The ``go version`` string, or raise BuildError when Go is missing."""
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "`go` is not on PATH; install Go >= 1.26 (https://go.dev/dl/) to build the stack"
        )
    out = subprocess.run([go, "version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def _stamp_ok(binary: Path, stamp: str) -> bool:
    stamp_file = binary.with_name(binary.name + ".stamp")
    return (
        binary.is_file()
        and stamp_file.is_file()
        and stamp_file.read_text(encoding="utf-8").strip() == stamp
    )


def _write_stamp(binary: Path, stamp: str) -> None:
    stamp_file = binary.with_name(binary.name + ".stamp")
    tmp = stamp_file.with_suffix(".stamp.tmp")
    tmp.write_text(stamp + "\n", encoding="utf-8")
    tmp.replace(stamp_file)


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], log: Path, what: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
        raise BuildError(
            f"building {what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"--- last lines of {log} ---\n{tail}"
        )


def _build_tool(root: Path, tool: GoTool, go: str, env: dict[str, str]) -> BuildResult:
    binary = binary_path(root, tool.name)
    stamp = f"{tool.spec} tags={tool.tags or '-'} release={tool.release or '-'} {go}"
    if _stamp_ok(binary, stamp):
        return BuildResult(tool.name, "up to date", 0.0, stamp)
    cmd = ["go", "install"]
    if tool.tags:
        cmd += ["-tags", tool.tags]
    if tool.release:
        pkg = "github.com/prometheus/common/version"
        cmd.append(f"-ldflags=-X {pkg}.Version={tool.release} -X {pkg}.Revision={tool.version}")
    cmd.append(tool.spec)
    start = time.monotonic()
    _run(cmd, cwd=root, env=env, log=root / ".cache" / "build" / f"{tool.name}.log", what=tool.name)
    _write_stamp(binary, stamp)
    return BuildResult(tool.name, "built", time.monotonic() - start, stamp)


def _build_collector(root: Path, go: str, env: dict[str, str]) -> BuildResult:
    manifest = root / "collector" / "manifest.yaml"
    if not manifest.is_file():
        raise BuildError(f"{manifest} is missing: it is the Collector's ocb build manifest")
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
    binary = binary_path(root, COLLECTOR_BINARY)
    stamp = f"ocb {COLLECTOR_VERSION} manifest-sha256={digest} {go}"
    if _stamp_ok(binary, stamp):
        return BuildResult(COLLECTOR_BINARY, "up to date", 0.0, stamp)
    builder = binary_path(root, "builder")
    start = time.monotonic()
    # ocb resolves dist.output_path against its working directory: the repo root.
    _run(
        [str(builder), "--config", str(manifest)],
        cwd=root,
        env=env,
        log=root / ".cache" / "build" / f"{COLLECTOR_BINARY}.log",
        what=f"the Collector from {manifest}",
    )
    built = root / ".cache" / "build" / COLLECTOR_BINARY / COLLECTOR_BINARY
    if not built.is_file():
        raise BuildError(
            f"ocb finished but {built} is missing; check dist.output_path in {manifest}"
        )
    tmp = binary.with_name(binary.name + ".tmp")
    shutil.copy2(built, tmp)
    tmp.replace(binary)
    _write_stamp(binary, stamp)
    return BuildResult(COLLECTOR_BINARY, "built", time.monotonic() - start, stamp)


def build_all(
    root: Path, *, on_start: Callable[[str], None] | None = None, thanos: bool = False
) -> Iterator[BuildResult]:
    """Build whatever is missing or out of date, one binary at a time.

    Builds run one after another: ``go`` already uses every core, and a parallel
    build on a small machine only thrashes.

    Args:
        root: Repository root (holds ``collector/manifest.yaml``).
        on_start: Called with a binary's name just before it is checked or built.
        thanos: Also build Thanos, for ``redline stack up --backend thanos`` (a cold
            build takes about 12 minutes on 2 cores, so only when asked).

    Yields:
        One BuildResult per binary: the Go tools, the Collector, then Thanos if asked.

    Raises:
        BuildError: Go is missing or a build failed (its log tail is in the message).
    """
    go = go_version()
    env = dict(os.environ)
    env["GOBIN"] = str(root / ".cache" / "bin")
    # Reproducible, VCS-independent builds: the repo may be a worktree without .git.
    env.setdefault("GOFLAGS", "-buildvcs=false")
    (root / ".cache" / "bin").mkdir(parents=True, exist_ok=True)
    for tool in TOOLS:
        if on_start:
            on_start(tool.name)
        yield _build_tool(root, tool, go, env)
    if on_start:
        on_start(COLLECTOR_BINARY)
    yield _build_collector(root, go, env)
    if not thanos:
        return
    # The scale-out backend (`redline stack up --backend thanos`), built the same way.
    from redline_operator.stack.thanos import THANOS_BINARY, build_thanos

    if on_start:
        on_start(THANOS_BINARY)
    yield build_thanos(root, go, env)
