"""``python -m redline.sim`` — the same as ``redline sim``."""

import sys

from redline.cli.main import main

sys.exit(main(["sim", *sys.argv[1:]]))
