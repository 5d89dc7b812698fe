"""The serving tests' fixtures (tests/serving/small_registry.py), for every module here."""

from small_registry import registry, serving  # noqa: F401
