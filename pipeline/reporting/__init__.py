"""Comparing runs (`comparison`), drawing runs and comparisons (`figures`) and rendering
reports (`render`)."""
