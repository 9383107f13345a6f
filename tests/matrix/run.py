"""Run the real-SDK tests against every environment of ``tests/matrix/pins.toml``.

Usage (``make matrix``, part of ``make test``)::

    python tests/matrix/run.py [--only NAME ...] [--jobs N]

Each environment is a venv under ``.cache/matrix/<name>``, made with uv (``uv venv`` +
``uv pip install -e instrumentation`` + the pins) and rebuilt only when its pins or
``instrumentation/pyproject.toml`` change. The tests import the sim from ``operator/`` on
``PYTHONPATH``; the operator distribution itself is not installed. Prints one line per
environment with the versions it really got, and exits non-zero when any failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PINS = ROOT / "tests" / "matrix" / "pins.toml"
CACHE = ROOT / ".cache" / "matrix"
UV = ROOT / ".cache" / "tools" / "bin" / "uv"
EXTRAS = "config"  # redline.config (the limiter's Match), used by the routing test
SHOWN = ("openai", "anthropic", "opentelemetry-sdk", "opentelemetry-instrumentation", "wrapt",
         "httpx")


def _name(requirement: str) -> str:
    return requirement.split("==")[0].split(">")[0].split("<")[0].strip().lower()


def _stamp(name: str, spec: dict, base: list[str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([name, spec["pins"], base, EXTRAS]).encode())
    h.update((ROOT / "instrumentation" / "pyproject.toml").read_bytes())
    return h.hexdigest()


def _build(name: str, spec: dict, base: list[str]) -> Path:
    venv = CACHE / name
    stamp = venv / ".redline-matrix"
    want = _stamp(name, spec, base)
    if stamp.exists() and stamp.read_text() == want:
        return venv
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    subprocess.run([str(UV), "venv", "--quiet", "--clear", "--python", sys.executable,
                    str(venv)], check=True, env=env)
    pinned = {_name(p) for p in spec["pins"]}
    base = [b for b in base if _name(b) not in pinned]  # an environment's pin wins
    subprocess.run([str(UV), "pip", "install", "--quiet", "--python", str(venv / "bin/python"),
                    "-e", f"{ROOT / 'instrumentation'}[{EXTRAS}]", *base, *spec["pins"]],
                   check=True, env=env)
    stamp.write_text(want)
    return venv


def _versions(venv: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, json\n"
            f"out = {{}}\nfor d in {SHOWN!r}:\n"
            "    try: out[d] = m.version(d)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))")
    done = subprocess.run([str(venv / "bin/python"), "-c", code], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)


def _run(name: str, spec: dict, base: list[str], tests: list[str]) -> dict:
    t0 = time.monotonic()
    log = CACHE / f"{name}.log"
    try:
        venv = _build(name, spec, base)
    except subprocess.CalledProcessError as exc:
        return {"env": name, "ok": False, "why": f"venv build failed: {exc}", "versions": {},
                "seconds": time.monotonic() - t0, "log": None}
    built = time.monotonic() - t0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT)])}
    cmd = [str(venv / "bin/python"), "-m", "pytest", "-p", "no:cacheprovider", "--noconftest",
           "-q", "-rs", "--timeout=300", *tests]
    with log.open("w") as out:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    tail = log.read_text().strip().splitlines()[-1:] or [""]
    return {"env": name, "ok": rc == 0, "why": tail[0], "versions": _versions(venv),
            "seconds": time.monotonic() - t0, "build_seconds": built, "log": str(log)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="environment names to run")
    parser.add_argument("--jobs", type=int, default=2, help="environments run at once")
    args = parser.parse_args(argv)
    spec = tomllib.loads(PINS.read_text())
    envs = {k: v for k, v in spec["env"].items() if not args.only or k in args.only}
    CACHE.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda kv: _run(kv[0], kv[1], spec["base"], spec["tests"]),
                                envs.items()))
    wall = time.monotonic() - t0
    print(f"{'env':<10} {'result':<6} {'secs':>5}  versions / pytest summary")
    for r in results:
        versions = " ".join(f"{k}={v}" for k, v in r["versions"].items())
        print(f"{r['env']:<10} {'pass' if r['ok'] else 'FAIL':<6} {r['seconds']:5.0f}  "
              f"{versions}\n{'':<24}{r['why']}")
    print(f"matrix wall time: {wall:.0f} s")
    (CACHE / "results.json").write_text(json.dumps({"wall_seconds": wall, "results": results},
                                                   indent=1))
    failed = [r["env"] for r in results if not r["ok"]]
    if failed:
        print("failed: " + ", ".join(failed) + " (logs in .cache/matrix/<env>.log)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
