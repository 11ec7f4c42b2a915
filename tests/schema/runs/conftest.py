"""The live stack's fixtures (tests/live.py): the API and worker processes, and a client."""

from tests.live import api, stack  # noqa: F401  (registered here for this package's tests)
