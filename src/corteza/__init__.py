"""corteza: train the Corteza cognitive model on a remote GPU from your own machine.

>>> from corteza import Client
>>> client = Client("http://127.0.0.1:8000")  # doctest: +SKIP
"""

from corteza._version import __version__
from corteza.client import Client, CortezaError

__all__ = ["Client", "CortezaError", "__version__"]
