"""`python -m pipeline.reproduce`: rerun a past run and compare (see `pipeline.cli.reproduce`)."""

import sys

from pipeline.cli.reproduce import main

if __name__ == "__main__":
    sys.exit(main())
