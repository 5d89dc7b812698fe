"""`python -m pipeline <command> ...`: the same as `notmnist <command> ...` (`cli.main`)."""

from pipeline.cli.main import main

if __name__ == "__main__":
    main()
