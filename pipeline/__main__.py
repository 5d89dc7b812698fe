"""`python -m pipeline`: train one run (see `pipeline.cli.train`)."""

from pipeline.cli.train import main

if __name__ == "__main__":
    main()
