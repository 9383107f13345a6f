"""``python -m redline_operator.sim`` — the same as ``redline sim``."""

import sys

from redline_operator.cli.main import main

sys.exit(main(["sim", *sys.argv[1:]]))
