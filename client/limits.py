"""The server's request limits that the client plans its requests by.

A copy of three values of `handlers/limits.py`, not an import: the client is
installed on its own by users, without the handlers. tests/client/test_limits.py
fails when the two disagree.
"""

from __future__ import annotations

MAX_ITEMS = 256  # instances per encode or decode request (LIMITS.max_items)
MAX_N = 256  # images per sample request (LIMITS.max_n)
MAX_SEED = 2**63 - 1  # seeds are 0 <= seed <= MAX_SEED (LIMITS.max_seed)
