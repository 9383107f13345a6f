"""A bad-input campaign against the CLI: prints how each input ended (issue 19's totals).

Every config key the generators read gets a set of hostile values (one at a time), a few
files are not YAML or not UTF-8, and every flag with a range gets values outside it. Each
input runs in a scratch copy of the project and is sorted by ``tests/badinput.classify``:
``ok`` (output passes the real promtool/amtool), ``clear_error``, ``traceback``, ``silent``
(exit 0 with output promtool/amtool reject), ``damage`` (files changed by a failed
command) or ``unclear`` (no ``error:`` line).

Run: ``.venv/bin/python benchmarks/badinput_campaign.py [--subprocess] [--quick]``
(needs ``.cache/bin/promtool`` and ``amtool``: ``make stack``).
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.badinput import BASE, OUTCOMES, classify, make_project, set_key, yaml_text  # noqa: E402
from tests.test_badinput_config import KEYS  # noqa: E402

VALUES = [0, -1, 0.0001, 1e308, float("inf"), float("nan"), True, "", "x" * 10_000,
          'a"b\\c\nd', "http://x/{{", "99999999999999999999999d", "0s", [1], {"a": 1}, None]

RAW = [b"version: 1\ntargets: \xff\n", b"[" * 5000, b"a: b\n" * 300_000, b"- 1\n",
       b"version: 1\n\ttargets: []\n", b"", b"targets: &a [*a]\n"]

FLAGS = [
    ["sweep", "--levels", ""], ["sweep", "--levels", "0"], ["sweep", "--levels", "1,100000"],
    ["sweep", "--max-concurrency", "10000000000000"], ["sweep", "--request-timeout", "0"],
    ["sweep", "--p95-explode", "-3"], ["sweep", "--warmup", "inf"],
    ["sweep", "--min-requests", "0"], ["sweep", "--max-retries", "99"],
    ["sweep", "--out", "redline.yaml"], ["sweep", "--prompt-tokens", "abc"],
    ["sweep", "--mix", "nosuch.jsonl"],
    ["knee", "--prometheus", "http://127.0.0.1:9", "--min-samples", "-1"],
    ["knee", "--prometheus", "http://127.0.0.1:9", "--window", "1y"],
    ["knee", "--prometheus", "http://127.0.0.1:9", "--window", "30d", "--step", "1s"],
    ["knee", "--prometheus", "not a url"],
    ["knee", "--prometheus", "http://127.0.0.1:9", "--target", "nosuch"],
    ["dashboards", "--render-png", "x.png", "--target", "nosuch"],
    ["dashboards", "--render-png", "x.png", "--range", "forever"],
    ["dashboards", "--out", "redline.yaml"], ["rules", "--out", "redline.yaml"],
    ["rules", "--check-targets", "--prometheus", "http://127.0.0.1:9"],
    ["top", "--once", "--interval", "0"], ["top", "--once", "--prometheus", "ftp://x"],
    ["rules", "--config", "nosuch.yaml"], ["rules", "--config", "."],
    ["dashboards", "--config", "/dev/null"],
]
SWEEP_BASE = ["--base-url", "http://127.0.0.1:9/v1", "--model", "m"]


def _inputs(quick: bool):
    for path in KEYS:
        for value in VALUES[:6] if quick else VALUES:
            data = BASE
            if path[-2:-1] == ("limiter",):
                data = set_key(data, path[:-1], {})
            text = yaml_text(set_key(data, path, value))
            yield f"{'.'.join(map(str, path))}={value!r:.40}", text, [["rules"], ["dashboards"]]
    for raw in RAW:
        yield f"raw {raw[:20]!r}", raw, [["rules"], ["dashboards"], ["rules", "--check"]]
    for flags in FLAGS:
        command = [*flags, *SWEEP_BASE] if flags[0] == "sweep" else flags
        yield " ".join(flags), yaml_text(BASE), [command]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subprocess", action="store_true",
                        help="run each command as a new process (slower, exactly as a user)")
    parser.add_argument("--quick", action="store_true", help="fewer values per key")
    args = parser.parse_args()
    totals: collections.Counter = collections.Counter()
    bad = []
    start = time.monotonic()
    tried = inputs = 0
    for label, config, commands in _inputs(args.quick):
        inputs += 1
        with tempfile.TemporaryDirectory() as tmp:
            project = make_project(Path(tmp), config)
            for command in commands:
                tried += 1
                result = classify(project, command, in_process=not args.subprocess,
                                  timeout=300)
                if label == " ".join(command[:len(label.split(" "))]) and result.code == 0:
                    result.outcome = "silent"  # a flag outside its range was accepted
                totals[result.outcome] += 1
                if result.outcome not in ("ok", "clear_error"):
                    bad.append((label, command, result))
    took = time.monotonic() - start
    print(f"bad-input campaign: {inputs} inputs, {tried} command runs in {took:.0f} s")
    for outcome in OUTCOMES:
        print(f"  {outcome:12} {totals[outcome]}")
    for label, command, result in bad:
        print(f"\n{result.outcome}: {label}: redline {' '.join(command)} (exit {result.code})")
        print((result.detail or result.stderr)[-1500:])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
