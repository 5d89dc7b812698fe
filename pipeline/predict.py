"""`python -m pipeline.predict`: letters for images, by a logged model (`pipeline.cli.predict`)."""

from pipeline.cli.predict import main

if __name__ == "__main__":
    main()
