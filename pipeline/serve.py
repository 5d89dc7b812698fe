"""`python -m pipeline.serve`: a registered model's alias over HTTP (`pipeline.cli.serve`)."""

from pipeline.cli.serve import main

if __name__ == "__main__":
    main()
