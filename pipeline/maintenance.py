"""`python -m pipeline.maintenance`: store maintenance (see `pipeline.cli.maintenance`)."""

import sys

from pipeline.cli.maintenance import main

if __name__ == "__main__":
    sys.exit(main())
