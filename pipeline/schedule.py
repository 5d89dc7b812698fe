"""`python -m pipeline.schedule`: retrain on a schedule (see `pipeline.cli.schedule`)."""

from pipeline.cli.schedule import main

if __name__ == "__main__":
    main()
