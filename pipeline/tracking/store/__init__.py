"""The store: where it is (`location`), opening it once per process (`connect`), its locks
and the comparison views saved on its experiment (`views`)."""
