"""Every request limit of the serving API, in one place.

A violation is answered with HTTP 400 and a JSON body naming the field (see
`handlers.errors`). The README's API section documents these numbers and a test
checks that it quotes them; `deploy/config.properties` sets TorchServe's own
`max_request_size` above `max_body_bytes`, so the handler (400 with a field)
answers before the frontend (413) does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Limits:
    max_items: int = 256  # instances per encode/decode/score request
    max_n: int = 256  # images per sample request
    # pixel values (items x C x H x W) per request: caps max_items and max_n for large
    # images, so that an answer of pixel lists stays within the response size
    max_values: int = 1 << 20
    max_body_bytes: int = 8 * 1024 * 1024  # whole request body
    max_image_bytes: int = 1024 * 1024  # one encoded image (after base64 decoding)
    max_image_pixels: int = 2048 * 2048  # width * height of one uploaded image
    max_abs_latent: float = 1000.0  # |z_i| accepted by decode
    max_temperature: float = 5.0  # sample: 0 <= temperature <= this
    max_seed: int = 2**63 - 1  # seeds are 0 <= seed <= this
    pixel_range: tuple[float, float] = (0.0, 1.0)  # encode `pixels` values
    # score `fpr`: p-values resolve 1/1000 (1001 stored quantiles of 5,000 held-out images)
    min_fpr: float = 0.001
    max_fpr: float = 0.5

    def for_image(self, shape: tuple[int, int, int]) -> Limits:
        """These limits for a model of image shape (C, H, W): at most `max_values`
        pixel values per request (1x28x28: 256 items; 3x64x64: 85)."""
        per_item = shape[0] * shape[1] * shape[2]
        items = max(1, min(self.max_items, self.max_values // per_item))
        return replace(self, max_items=items, max_n=max(1, min(self.max_n, items)))


LIMITS = Limits()
