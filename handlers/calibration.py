"""Out-of-distribution statistics of images and their calibration (the `score` operation's math).

Per image, from one encoder and one decoder pass (the decoder at z = z_mean,
so the answer is deterministic):
- recon_nats: -log p(x | z_mean), Bernoulli cross-entropy of the decoder's
  pixels, summed over pixels (the training loss of the VAEs);
- kl_nats (VAE): KL(q(z | x) || N(0, I));
- sq_err: squared error of the reconstruction, summed over pixels;
- z_norm: ||z_mean||; sigma_norm (VAE): ||exp(z_log_var / 2)||;
- png_bits: the length of the image as a PNG (`png_bits`), the input-complexity
  term of Serra et al. (2020).

Scores (larger = more unusual):
- `neg_elbo` (VAE; `recon` for an AE): recon_nats + kl_nats. Alone it fails on
  simpler images (a Fashion model gives MNIST digits *higher* likelihood);
- `complexity`: the same in bits minus png_bits (S(x) = -log2 p(x) - L(x));
- `mahalanobis`: squared Mahalanobis distance of the logs of the statistics from
  their mean over held-out in-distribution images (a DoSE-style density);
- `latent`: squared Mahalanobis distance of the encoder's output (z_mean and
  z_log_var; AE: z) from its held-out mean. It needs no decoder pass and no
  PNG, so a request may ask for it alone (`mode: latent`) at about encode's cost.

The calibration (manifest key `calibration`, written by `serving/calibrate.py`
from the validation split) holds each score's quantiles over the held-out
images and the means and precision matrices of the statistics and of the
encoder's output, so serving needs nothing but the manifest. A p-value is the
share of held-out images scoring at least as high; an image is an outlier at
false-positive rate `fpr` when p < fpr.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch

LN2 = math.log(2.0)
PRIMARY = "mahalanobis"  # the score behind `is_outlier` and the metrics
LATENT = "latent"  # the encoder-only score, and the primary of a `mode: latent` request
CLAMP = 1e-6  # pixel probabilities are clamped to [CLAMP, 1 - CLAMP] before the log
PNG_OVERHEAD = 8 + 25 + 12 + 12  # signature, IHDR, one IDAT's framing, IEND (bytes)
FLAG_FPR = 0.01  # the flagged-items counter flags at this rate, whatever a request asks


def stat_names(kind: str) -> tuple[str, ...]:
    vae = ("kl_nats", "sigma_norm") if kind == "vae" else ()
    return ("recon_nats", "sq_err", "z_norm", *vae, "png_bits")


def score_names(kind: str) -> tuple[str, ...]:
    return ("neg_elbo" if kind == "vae" else "recon", "complexity", PRIMARY, LATENT)


def latent_code(e) -> torch.Tensor:
    """An encoder's output as one (n, C) row per item: z_mean ++ z_log_var, or an AE's z."""
    return torch.cat(e, 1) if isinstance(e, tuple) else e


# ---- statistics ------------------------------------------------------------------
def model_stats(
    x: torch.Tensor, pixels: torch.Tensor, z_mean: torch.Tensor, z_log_var: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """The model-side statistics of a chunk (any device), float64, one value per item."""
    x, p = x.flatten(1).double(), pixels.flatten(1).double().clamp(CLAMP, 1 - CLAMP)
    mean = z_mean.double()
    out = {
        "recon_nats": -(x * p.log() + (1 - x) * (-p).log1p()).sum(1),
        "sq_err": (x - p).pow(2).sum(1),
        "z_norm": mean.norm(dim=1),
    }
    if z_log_var is not None:
        out["kl_nats"] = kl_nats(z_mean, z_log_var)
        out["sigma_norm"] = (0.5 * z_log_var.double()).exp().norm(dim=1)
    return out


def kl_nats(z_mean: torch.Tensor, z_log_var: torch.Tensor) -> torch.Tensor:
    """KL(q(z | x) || N(0, I)) per item, float64 (clamped at 0 against rounding)."""
    mean, lv = z_mean.double(), z_log_var.double()
    return (0.5 * (mean.pow(2) + lv.exp() - 1.0 - lv).sum(1)).clamp_min(0.0)


def run_model(
    encoder, decoder, x: torch.Tensor, scale: float, kind: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A chunk through both modules -> (statistics (n, S) in `stat_names` order, the
    encoder's output (n, C) as `latent_code`, pixels).

    The one computation behind the `score` operation and its calibration. The
    PNG is of the 8-bit image (x * scale, rounded: exactly the uploaded pixels).
    """
    e = encoder(x)
    z_mean, z_log_var = e if isinstance(e, tuple) else (e, None)
    pixels = decoder(z_mean)
    stats = model_stats(x, pixels, z_mean, z_log_var)
    hwc = x.permute(0, 2, 3, 1) if x.shape[1] > 1 else x[:, 0]  # as the image's PNG holds it
    u8 = np.clip(np.rint(hwc.float().cpu().numpy() * scale), 0, 255).astype(np.uint8)
    stats["png_bits"] = torch.from_numpy(png_bits(u8)).to(stats["z_norm"].device)
    return torch.stack([stats[k] for k in stat_names(kind)], 1), latent_code(e), pixels


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def png_rows(images: np.ndarray) -> np.ndarray:
    """(n, H, W) grayscale or (n, H, W, C) colour uint8 -> (n, H, 1 + W * C) uint8: each
    row of interleaved samples with its PNG filter byte first.

    The filter of each row is chosen as libpng and Pillow do by default (the
    least sum of absolute values of the filtered bytes, read as signed), for
    all images at once. "Left" is the same channel of the pixel before (PNG's
    bytes-per-pixel offset).
    """
    n, h = images.shape[:2]
    bpp = 1 if images.ndim == 3 else images.shape[3]
    x = images.reshape(n, h, -1).astype(np.int16)
    a = np.zeros_like(x)  # left
    a[:, :, bpp:] = x[:, :, :-bpp]
    b = np.zeros_like(x)  # up
    b[:, 1:] = x[:, :-1]
    c = np.zeros_like(x)  # up-left
    c[:, 1:, bpp:] = x[:, :-1, :-bpp]
    cands = np.stack([x, x - a, x - b, x - (a + b) // 2, x - _paeth(a, b, c)]) & 0xFF
    cost = np.where(cands >= 128, 256 - cands, cands).sum(-1)  # (5, n, H)
    best = cost.argmin(0)  # ties go to the lowest filter type
    rows = np.take_along_axis(cands, best[None, :, :, None], 0)[0]
    return np.concatenate([best[..., None], rows], -1).astype(np.uint8)


def png_bits(images: np.ndarray, level: int = 9) -> np.ndarray:
    """(n, H, W) or (n, H, W, 3) uint8 -> the bits of each image as an 8-bit grayscale or
    RGB PNG (float64).

    One IDAT chunk of the filtered rows deflated at `level`: the file
    `write_png_file` writes has exactly this length. A 28 x 28 image takes tens
    of microseconds here against about 170 us through Pillow's PNG writer.
    """
    rows = png_rows(images)
    sizes = [len(zlib.compress(r.tobytes(), level)) for r in rows]
    return (np.asarray(sizes, dtype=np.float64) + PNG_OVERHEAD) * 8.0


def write_png_file(image: np.ndarray, level: int = 9) -> bytes:
    """The PNG whose length `png_bits` counts (tests read it back with Pillow)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    h, w = image.shape[:2]
    colour = 2 if image.ndim == 3 else 0  # PNG colour type: RGB, or grayscale
    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    idat = zlib.compress(png_rows(image[None])[0].tobytes(), level)
    sig = b"\x89PNG\r\n\x1a\n"
    return sig + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def scores_of(
    kind: str, stats: dict[str, np.ndarray], code: np.ndarray, cal: Calibration
) -> np.ndarray:
    """(n, len(score_names(kind))) scores from the statistics and the encoder's output."""
    raw = stats["recon_nats"] + (stats["kl_nats"] if kind == "vae" else 0.0)
    cols = [raw, raw / LN2 - stats["png_bits"], cal.mahalanobis(stats), cal.latent(code)]
    return np.stack(cols, 1)


def _log_features(stats: dict[str, np.ndarray], features: tuple[str, ...]) -> np.ndarray:
    """(n, F): the log of each statistic the Mahalanobis score takes."""
    return np.stack([np.log(np.maximum(stats[k], 1e-12)) for k in features], 1)


def _distance(v: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    d = v - mean
    return np.einsum("ij,jk,ik->i", d, precision, d)


def _mean_precision(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cov = np.atleast_2d(np.cov(v, rowvar=False))
    # a tiny ridge guards against a statistic that does not vary (a flat input set)
    return v.mean(0), np.linalg.inv(cov + 1e-9 * np.diag(np.diag(cov)) + 1e-12 * np.eye(len(cov)))


# ---- calibration ---------------------------------------------------------------------
@dataclass(frozen=True)
class Calibration:
    """What `manifest["calibration"]` holds, checked once at load."""

    scores: tuple[str, ...]
    levels: np.ndarray  # (L,) increasing in [0, 1]
    quantiles: np.ndarray  # (S, L): quantile `levels[j]` of score i over the held-out images
    features: tuple[str, ...]  # statistics whose logs the Mahalanobis score takes
    mean: np.ndarray  # (F,)
    precision: np.ndarray  # (F, F): inverse covariance
    held_out: int  # images the quantiles come from
    code_mean: np.ndarray  # (C,): the encoder's output, for the latent score
    code_precision: np.ndarray  # (C, C)

    @classmethod
    def from_manifest(cls, manifest: dict) -> Calibration:
        try:
            c = manifest["calibration"]
            cal = cls(
                tuple(c["scores"]),
                np.asarray(c["levels"], dtype=np.float64),
                np.asarray([c["quantiles"][s] for s in c["scores"]], dtype=np.float64),
                tuple(c["mahalanobis"]["features"]),
                np.asarray(c["mahalanobis"]["mean"], dtype=np.float64),
                np.asarray(c["mahalanobis"]["precision"], dtype=np.float64),
                int(c["held_out"]["images"]),
                np.asarray(c["latent"]["mean"], dtype=np.float64),
                np.asarray(c["latent"]["precision"], dtype=np.float64),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"manifest.json has no usable calibration ({err!r}); "
                "run `make calibrate` (python -m serving.calibrate)"
            ) from None
        kind = manifest.get("kind")
        if cal.scores != score_names(kind) or cal.features != stat_names(kind):
            raise ValueError(f"calibration is for other scores: {cal.scores}, {cal.features}")
        f, n = len(cal.features), len(cal.levels)
        code = int(manifest["latent_dim"]) * (2 if kind == "vae" else 1)
        if (
            cal.quantiles.shape != (len(cal.scores), n)
            or cal.precision.shape != (f, f)
            or cal.code_mean.shape != (code,)
            or cal.code_precision.shape != (code, code)
        ):
            raise ValueError("calibration arrays have the wrong shapes")
        if n < 2 or np.any(np.diff(cal.levels) <= 0) or np.any(np.diff(cal.quantiles) < 0):
            raise ValueError("calibration levels or quantiles are not increasing")
        return cal

    def mahalanobis(self, stats: dict[str, np.ndarray]) -> np.ndarray:
        return _distance(_log_features(stats, self.features), self.mean, self.precision)

    def latent(self, code: np.ndarray) -> np.ndarray:
        return _distance(np.asarray(code, dtype=np.float64), self.code_mean, self.code_precision)

    def p_values(self, scores: np.ndarray, names: tuple[str, ...] | None = None) -> np.ndarray:
        """(n, S) scores (of `names`, default all) -> (n, S) upper-tail p-values.

        1 - F(s), F the held-out distribution interpolated between the stored
        quantiles; never below 1 / (held_out + 1), never above 1.
        """
        rows = [self.scores.index(k) for k in names] if names else range(len(self.scores))
        out = np.empty_like(scores, dtype=np.float64)
        for j, i in enumerate(rows):
            out[:, j] = 1.0 - np.interp(scores[:, j], self.quantiles[i], self.levels)
        return np.clip(out, 1.0 / (self.held_out + 1), 1.0)


def fit_calibration(
    kind: str,
    stats: dict[str, np.ndarray],
    code: np.ndarray,
    levels: int = 1001,
    digits: int = 7,
) -> dict:
    """The manifest's `calibration` from the statistics and the encoder's outputs
    (`latent_code`) of held-out images (JSON-ready)."""
    features = stat_names(kind)
    logs = _log_features(stats, features)

    def r(a) -> np.ndarray:  # stored with `digits` significant digits, and used so
        return np.vectorize(lambda v: float(f"{v:.{digits}g}"), otypes=[float])(np.asarray(a))

    (mean, precision), (c_mean, c_precision) = (
        (r(m), r(p)) for m, p in (_mean_precision(logs), _mean_precision(code))
    )
    names, grid = score_names(kind), np.linspace(0.0, 1.0, levels)
    cal = Calibration(
        names, grid, np.zeros((len(names), levels)), features, mean, precision, len(logs),
        c_mean, c_precision,
    )  # fmt: skip
    qs = r(np.quantile(scores_of(kind, stats, code, cal), grid, axis=0).T)  # (S, L)
    return {
        "scores": list(names),
        "primary": PRIMARY,
        "levels": r(grid).tolist(),
        "quantiles": {s: q.tolist() for s, q in zip(names, qs, strict=True)},
        "mahalanobis": {
            "features": list(features),
            "of": "log of each statistic",
            "mean": mean.tolist(),
            "precision": precision.tolist(),
        },
        "latent": {
            "of": "z_mean and z_log_var" if kind == "vae" else "z",
            "mean": c_mean.tolist(),
            "precision": c_precision.tolist(),
        },
        "held_out": {"images": len(logs)},
    }
