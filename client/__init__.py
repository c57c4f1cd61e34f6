"""Python client of latentserve: `LatentClient` and the `python -m client` CLI.

Needs numpy, Pillow and requests only (no torch), so any service can use it.
"""

from client.api import DEFAULT_URL, LatentClient
from client.errors import InputError, LatentServeError
from client.metadata import ModelInfo
from client.results import Encoded, Stats
from client.retry import RetryPolicy
from client.scores import Scored

__all__ = [
    "DEFAULT_URL",
    "Encoded",
    "InputError",
    "LatentClient",
    "LatentServeError",
    "ModelInfo",
    "RetryPolicy",
    "Scored",
    "Stats",
]
