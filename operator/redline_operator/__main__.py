import sys

from redline_operator.cli.main import main

sys.exit(main())
