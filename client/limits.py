"""The server's request limits that the client plans its requests by.

A copy of values of `handlers/limits.py`, not an import: the client is
installed on its own by users, without the handlers. tests/client/test_limits.py
fails when the two disagree.

Limits that depend on the model's image size take its image shape (C, H, W),
which the client learns from the server (client/metadata.py): the server takes
at most `MAX_VALUES` pixel values per request (`max_items(shape)` items), and a
request body of at most `MAX_BODY_BYTES`, so the client also sizes each request
by the bytes its images can take on the wire (`items_per_request`).
"""

from __future__ import annotations

import math

MAX_ITEMS = 256  # instances per encode, decode or score request (LIMITS.max_items)
MAX_N = 256  # images per sample request (LIMITS.max_n)
MAX_SEED = 2**63 - 1  # seeds are 0 <= seed <= MAX_SEED (LIMITS.max_seed)
MAX_ABS_LATENT = 1000.0  # decode accepts |z_i| <= this (LIMITS.max_abs_latent)
MAX_VALUES = 1 << 20  # pixel values (items x C x H x W) per request (LIMITS.max_values)
MAX_BODY_BYTES = 8 * 1024 * 1024  # one request body (LIMITS.max_body_bytes)
MAX_IMAGE_BYTES = 1024 * 1024  # one uploaded image file, JSON API (LIMITS.max_image_bytes)
MAX_IMAGE_PIXELS = 2048 * 2048  # width x height of one uploaded image (LIMITS.max_image_pixels)
CHANNELS = (1, 3)  # a model's images: grayscale (L) or colour (RGB)

# What a request may spend on its images: the body limit less room for the rest of
# the request (the protocol's JSON header, the JSON API's other keys).
BODY_BUDGET = MAX_BODY_BYTES - 64 * 1024
# The longest JSON float: "-2.2250738585072014e-308", and a comma.
JSON_FLOAT_BYTES = 25


def max_items(shape: tuple[int, int, int]) -> int:
    """Items per encode/decode/score request the server takes for images of `shape`
    (C, H, W): MAX_ITEMS, fewer for large images (handlers' `Limits.for_image`)."""
    return max(1, min(MAX_ITEMS, MAX_VALUES // math.prod(shape)))


def max_n(shape: tuple[int, int, int]) -> int:
    """Images per sample request the server makes for images of `shape`."""
    return max(1, min(MAX_N, max_items(shape)))


def png_b64_bytes(shape: tuple[int, int, int]) -> int:
    """An upper bound on base64 of an 8-bit PNG of `shape` however the pixels look:
    deflate stores what it cannot compress (5 bytes per 64 KiB block), PNG adds a
    filter byte per row and 12 bytes per chunk."""
    c, h, w = shape
    raw = c * h * w + h
    png = raw + raw // 4096 + 512
    return 4 * math.ceil(png / 3)


def item_bytes(shape: tuple[int, int, int], protocol: str, floats: bool) -> int:
    """The most bytes one image of `shape` takes in a request: over the Open Inference
    Protocol 1 byte a value (UINT8), 8 with float images (FP64 at worst); over the JSON
    API a PNG in base64 (files larger than their share are converted to one,
    client/pixels.py), or nested lists of JSON floats."""
    values = math.prod(shape)
    if protocol == "v2":
        return values * (8 if floats else 1)
    if floats:
        return values * JSON_FLOAT_BYTES + 3 * shape[1] * shape[2] + 64
    return png_b64_bytes(shape) + 32


def items_per_request(shape: tuple[int, int, int], protocol: str, floats: bool) -> int:
    """Images of `shape` per encode/score request: within the server's item limit for
    the shape and within its body limit on the wire (at least 1)."""
    by_bytes = BODY_BUDGET // item_bytes(shape, protocol, floats)
    return max(1, min(max_items(shape), by_bytes))
