"""The ``corteza`` command line: a thin shell over the library."""

from corteza.cli.app import app, main

__all__ = ["app", "main"]
