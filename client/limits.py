"""The server's request limits that the client plans its requests by.

A copy of values of `handlers/limits.py`, not an import: the client is
installed on its own by users, without the handlers. tests/client/test_limits.py
fails when the two disagree.
"""

from __future__ import annotations

MAX_ITEMS = 256  # instances per encode or decode request (LIMITS.max_items)
MAX_N = 256  # images per sample request (LIMITS.max_n)
MAX_SEED = 2**63 - 1  # seeds are 0 <= seed <= MAX_SEED (LIMITS.max_seed)
MAX_ABS_LATENT = 1000.0  # decode accepts |z_i| <= this (LIMITS.max_abs_latent)
# The Open Inference Protocol's image tensor is [N, 28, 28] (UINT8 0..255 or FP32 in [0, 1]):
# the size every shipped model was trained at.
IMAGE_HW = (28, 28)
