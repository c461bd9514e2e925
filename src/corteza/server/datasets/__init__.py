"""Datasets stored on the server, named by the sha256 of their file (see :mod:`.store`)."""
