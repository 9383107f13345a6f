"""``redline docs``: regenerate the README's metric table from the catalogue."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from redline.semconv import metrics_markdown_table
from redline_operator.cli.main import CliError

BEGIN = "<!-- metrics:begin -->"
END = "<!-- metrics:end -->"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("docs", help="regenerate the README metric table from semconv.py")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--check", action="store_true",
                   help="exit 1 if the committed table differs from the catalogue")
    p.set_defaults(func=_run)


def render(text: str, readme: str = "README.md") -> str:
    """``text`` with the generated table between the markers."""
    if BEGIN not in text or END not in text:
        raise CliError(f"{readme}: markers {BEGIN} and {END} not found")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{metrics_markdown_table()}\n{END}{tail}"


def _run(args: argparse.Namespace) -> int:
    path = Path(args.readme)
    try:
        text = path.read_text()
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror}") from None
    new = render(text, str(path))
    if args.check:
        if new != text:
            print(f"{path}: metric table is stale; run `redline docs`")
            return 1
        return 0
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(new)
    os.replace(tmp, path)
    return 0
