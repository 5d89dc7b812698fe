"""`python -m pipeline.registry`: list, promote, roll back (see `pipeline.cli.registry`)."""

from pipeline.cli.registry import run

if __name__ == "__main__":
    run()
