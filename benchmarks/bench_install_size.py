"""What ``pip install redline`` puts into an app's environment, before and after the split.

Before: the dependency list of the single distribution before the app/operator split
(every dependency hard-pinned, opentelemetry-distro, pydantic, matplotlib, ...), taken from
git (``OLD_REF``). After: the wheel built from ``instrumentation/``. Each goes into a fresh
uv venv under ``.cache/install-size/``; the figure is the size of its site-packages and the
number of distributions. Also tries the old list next to an app's pins (it cannot resolve).

Usage: ``.venv/bin/python benchmarks/bench_install_size.py``
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UV = ROOT / ".cache" / "tools" / "bin" / "uv"
HOME = ROOT / ".cache" / "install-size"
OLD_REF = "ec7dffe^"  # the last commit before the split
APP_PINS = ["opentelemetry-sdk==1.40.0", "pydantic==2.9.2", "httpx==0.27.2", "openai==1.55.3"]
ENV = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}


def _uv(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(UV), *map(str, args)], capture_output=True, text=True, env=ENV,
                          check=check)


def _size(venv: Path) -> tuple[int, int]:
    site = next((venv / "lib").glob("python3*/site-packages"))
    total = sum(f.stat().st_size for f in site.rglob("*") if f.is_file() and not f.is_symlink())
    dists = len(list(site.glob("*.dist-info")))
    return total, dists


def _venv(name: str, *requirements: str | Path) -> tuple[int, int]:
    venv = HOME / name
    _uv("venv", "--quiet", "--clear", "--python", sys.executable, venv)
    _uv("pip", "install", "--quiet", "--python", venv / "bin/python", *requirements)
    return _size(venv)


def main() -> None:
    old = tomllib.loads(subprocess.run(["git", "show", f"{OLD_REF}:pyproject.toml"], cwd=ROOT,
                                       capture_output=True, text=True, check=True).stdout)
    old_deps = old["project"]["dependencies"]
    dist = HOME / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    _uv("build", "--wheel", "--quiet", "--out-dir", dist, ROOT / "instrumentation")
    wheel = next(dist.glob("redline-*.whl"))
    before, n_before = _venv("before", *old_deps)
    after, n_after = _venv("after", wheel)
    mib = 1024 * 1024
    print(f"before the split ({len(old_deps)} hard pins): {before / mib:6.1f} MiB, "
          f"{n_before} distributions")
    print(f"after  (redline wheel, ranges):    {after / mib:6.1f} MiB, {n_after} distributions")
    print(f"saved: {(before - after) / mib:.1f} MiB ({100 * (before - after) / before:.0f} %)")
    clash = _uv("pip", "install", "--dry-run", "--python", HOME / "before/bin/python",
                *old_deps, *APP_PINS, check=False)
    verdict = "resolves" if clash.returncode == 0 else "does NOT resolve"
    first = next((ln for ln in clash.stderr.splitlines() if re.search(r"Because|No solution", ln)),
                 clash.stderr.strip().splitlines()[-1:] or [""])
    print(f"old list next to {' '.join(APP_PINS)}: {verdict}  {first}")


if __name__ == "__main__":
    main()
