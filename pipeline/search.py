"""`python -m pipeline.search`: a hyperparameter search (see `pipeline.cli.search`)."""

from pipeline.cli.search import main

if __name__ == "__main__":
    main()
