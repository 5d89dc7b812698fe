"""`python -m pipeline.retrain`: one retraining attempt (see `pipeline.cli.retrain`)."""

from pipeline.cli.retrain import main

if __name__ == "__main__":
    main()
