"""`python -m pipeline.report`: compare runs in one report (see `pipeline.cli.report`)."""

import sys

from pipeline.cli.report import main

if __name__ == "__main__":
    sys.exit(main())
