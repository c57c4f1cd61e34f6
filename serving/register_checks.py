"""What `serving.register` checks before a model trained elsewhere enters the store.

Each check raises `RegisterError` with a message that names what is wrong and
how to fix it. The pair is probed the way a TorchServe worker will call it
(handlers/): loaded with `torch.jit.load`, put in eval mode, run under
`torch.inference_mode()` on float32 images `uint8 / pixel_scale` (clipped to
[0, 1], as `handlers.wire.images.scale_pixels` feeds them):

- the encoder takes (B, C, H, W) and returns (z_mean, z_log_var), each (B, D),
  for a VAE, or one tensor z (B, D) for an AE;
- the decoder maps (B, D) to (B, C, H, W) pixels in [0, 1];
- every output is finite float32, the same input gives the same output, and row
  i of a batch of 8 equals that input alone (within `TOL`, relative for outputs
  above 1 in magnitude): the engine batches requests together and splits the
  answer by rows.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

CHANNELS = (1, 3)  # grayscale or RGB: the image modes the handlers read and write
MAX_SIDE = 1024  # registration's bound on H and W (the handlers accept up to 4096)
MAX_LATENT = 4096
KINDS = ("ae", "vae")
BATCH = 8
TOL = 1e-5  # batch-of-8 row against the same input alone; repeated calls
# `<model>-<op>` is an archive's name, so a model named like one would read as another's
OPERATION_SUFFIXES = ("-encode", "-decode", "-sample", "-score")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class RegisterError(ValueError):
    """A refused registration; the message says what is wrong."""


def check_name(name: str, reserved: tuple[str, ...] = ()) -> None:
    """A model name that every archive name `<name>-<op>` keeps valid and unambiguous."""
    if not NAME.fullmatch(name):
        raise RegisterError(
            f"model name {name!r}: use 1-64 letters, digits, '-' and '_', starting with a "
            "letter or digit (it becomes the TorchServe model names <name>-<op>)"
        )
    if name.endswith(OPERATION_SUFFIXES):
        raise RegisterError(
            f"model name {name!r} ends like an operation ({', '.join(OPERATION_SUFFIXES)}): "
            f"its archives would be named {name}-encode, ..., which read as archives of "
            f"another model; choose another name"
        )
    if name in reserved:
        raise RegisterError(
            f"model name {name!r} is a shipped model (make models builds it); choose another name"
        )


def parse_image_shape(text: str) -> tuple[int, int, int]:
    """'C,H,W' -> (C, H, W), C in CHANNELS, 1 <= H, W <= MAX_SIDE."""
    try:
        c, h, w = (int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise RegisterError(
            f"--image-shape {text!r}: want C,H,W (three integers, e.g. 3,64,64)"
        ) from None
    if c not in CHANNELS:
        raise RegisterError(
            f"--image-shape {text!r}: {c} channels; the served images are grayscale (1) or RGB (3)"
        )
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise RegisterError(f"--image-shape {text!r}: H and W must be in [1, {MAX_SIDE}]")
    return c, h, w


def check_settings(kind: str, latent_dim: int, pixel_scale: float) -> None:
    if kind not in KINDS:
        raise RegisterError(f"--kind {kind!r}: want ae or vae")
    if not 1 <= latent_dim <= MAX_LATENT:
        raise RegisterError(f"--latent-dim {latent_dim}: must be in [1, {MAX_LATENT}]")
    if not (np.isfinite(pixel_scale) and pixel_scale > 0):
        raise RegisterError(f"--pixel-scale {pixel_scale}: must be a positive number (255)")


# ---- loading -------------------------------------------------------------------------
def _is_package(path: Path) -> bool:
    """An AOTInductor / torch.export package (.pt2): a zip with an `archive_format` record."""
    if path.suffix == ".pt2":
        return True
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("archive_format") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_torchscript(path: Path, role: str) -> torch.jit.ScriptModule:
    """The TorchScript module at `path`, in eval mode (the `role` names it in messages)."""
    path = Path(path)
    if not path.is_file():
        raise RegisterError(f"--{role} {path}: no such file")
    if _is_package(path):
        raise RegisterError(
            f"--{role} {path}: an AOTInductor/torch.export package (.pt2) is refused: the "
            "archives serve TorchScript (encoder.pt, decoder.pt), and the aoti format builds "
            "its packages from the model's own code (model_config), which a registered model "
            "does not have. Save TorchScript: torch.jit.script(module).save(path)"
        )
    try:
        with warnings.catch_warnings():  # TorchScript is the export contract
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:  # torch raises RuntimeError, pickle errors, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RegisterError(
            f"--{role} {path} is not TorchScript (torch.jit.load: {first[:200]}). "
            "Save it with torch.jit.script(module).save(path) or torch.jit.trace; "
            "torch.save of a module or a state_dict is not TorchScript"
        ) from None
    return module.eval()


# ---- probing ---------------------------------------------------------------------------
def probe_images(shape: tuple[int, int, int], scale: float, n: int = BATCH) -> torch.Tensor:
    """n seeded random uint8 images as the handlers feed them: uint8 / scale in [0, 1]."""
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    return torch.from_numpy(np.clip(u8.astype(np.float32) / np.float32(scale), 0.0, 1.0))


def _call(module, x: torch.Tensor, role: str, what: str):
    try:
        with torch.inference_mode():
            return module(x)
    except Exception as err:
        msg = str(err).strip().splitlines()
        last = msg[-1] if msg else type(err).__name__
        raise RegisterError(
            f"{role} failed on {what} of shape {tuple(x.shape)}: {last[:300]}"
        ) from None


def _check_tensor(t, name: str, want: tuple[int, ...], hint: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise RegisterError(f"{name} is a {type(t).__name__}, not a tensor")
    got = tuple(t.shape)
    if got[:1] != want[:1]:
        raise RegisterError(
            f"{name} has shape {got} for a batch of {want[0]}: its first dimension must be "
            f"the batch (want {want})"
        )
    if got != want:
        raise RegisterError(f"{name} has shape {got}, want {want} ({hint})")
    if t.dtype != torch.float32:
        raise RegisterError(f"{name} is {t.dtype}, want torch.float32 (add .float())")
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise RegisterError(f"{name} has {bad} NaN or infinite values on the probe images")


def encoder_outputs(out, kind: str, n: int, latent_dim: int) -> tuple[torch.Tensor, ...]:
    """The encoder's output as a tuple of its tensors, checked for the kind."""
    names = ("z_mean", "z_log_var") if kind == "vae" else ("z",)
    if kind == "vae":
        if isinstance(out, torch.Tensor):
            raise RegisterError(
                "encoder returns one tensor; a VAE encoder returns the tuple (z_mean, "
                "z_log_var). Use --kind ae for a plain autoencoder"
            )
        if not isinstance(out, tuple) or len(out) != 2:
            got = f"a tuple of {len(out)}" if isinstance(out, tuple) else f"a {type(out).__name__}"
            raise RegisterError(
                f"encoder returns {got}; a VAE encoder returns the tuple (z_mean, z_log_var)"
            )
    elif not isinstance(out, torch.Tensor):
        n_out = f" of {len(out)} tensors" if isinstance(out, tuple | list) else ""
        raise RegisterError(
            f"encoder returns a {type(out).__name__}{n_out}; an AE encoder returns one tensor "
            "z of shape (B, latent_dim). Use --kind vae if it returns (z_mean, z_log_var)"
        )
    outs = out if isinstance(out, tuple) else (out,)
    for t, name in zip(outs, names, strict=True):
        _check_tensor(t, f"encoder's {name}", (n, latent_dim), f"--latent-dim {latent_dim}")
    return outs


def decoder_pixels(out, n: int, latent_dim: int, shape: tuple[int, int, int]) -> torch.Tensor:
    want = (n, *shape)
    if not isinstance(out, torch.Tensor):
        raise RegisterError(f"decoder returns a {type(out).__name__}; want one tensor {want}")
    _check_tensor(
        out,
        "decoder's output",
        want,
        f"(B, C, H, W) for z of shape ({n}, {latent_dim}), from --image-shape",
    )
    lo, hi = float(out.min()), float(out.max())
    if lo < 0.0 or hi > 1.0:
        raise RegisterError(
            f"decoder outputs values in [{lo:.4g}, {hi:.4g}], outside the pixel range [0, 1]: "
            "it returns logits (or unscaled pixels); end the decoder with torch.sigmoid "
            "(or divide by the pixel scale) before exporting"
        )
    return out


def _max_diff(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def _consistent(module, x: torch.Tensor, full: tuple, role: str, as_tuple) -> float:
    """Same output on a second call, and row i of the batch == input i alone (within TOL,
    relative to the outputs' largest magnitude where that is above 1: float sums)."""
    tol = TOL * max(1.0, max(float(t.abs().max()) for t in full))
    again = _max_diff(full, as_tuple(_call(module, x, role, "a second call"), len(x)))
    if not again <= tol:
        raise RegisterError(
            f"{role} gives different outputs for the same batch (max diff {again:.3g}): it "
            "samples noise in forward (e.g. the reparameterisation)? Export the deterministic "
            "part; a VAE encoder returns (z_mean, z_log_var)"
        )
    worst = 0.0
    for i in range(len(x)):
        alone = as_tuple(_call(module, x[i : i + 1], role, "a batch of 1"), 1)
        diff = _max_diff(tuple(t[i : i + 1] for t in full), alone)
        if not diff <= tol:
            raise RegisterError(
                f"{role}: row {i} of a batch of {len(x)} differs from the same input alone by "
                f"{diff:.3g} (> {tol:.3g}): its outputs depend on the other items of the batch "
                "(BatchNorm in training mode, a normalisation over the batch, a fixed batch "
                "size baked in by tracing?); the server batches requests together"
            )
        worst = max(worst, diff)
    return worst


def check_pair(
    encoder,
    decoder,
    kind: str,
    shape: tuple[int, int, int],
    latent_dim: int,
    scale: float,
) -> dict:
    """Run every check of the pair; what the manifest records of them."""
    x = probe_images(shape, scale)
    n = len(x)

    def enc(out, k):
        return encoder_outputs(out, kind, k, latent_dim)

    codes = enc(_call(encoder, x, "encoder", "a float32 batch"), n)
    enc_diff = _consistent(encoder, x, codes, "encoder", enc)
    # the decoder at the encoder's codes (as score decodes) and at N(0, I) draws (sample)
    draws = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(0))

    def dec(out, k):
        return (decoder_pixels(out, k, latent_dim, shape),)

    ranges, dec_diff = [], 0.0
    for z in (codes[0], draws):
        pixels = dec(_call(decoder, z, "decoder", "a float32 batch of codes"), n)
        dec_diff = max(dec_diff, _consistent(decoder, z, pixels, "decoder", dec))
        ranges += [float(pixels[0].min()), float(pixels[0].max())]
    return {
        "probe": f"{n} seeded random uint8 images / {scale:g}, and {n} N(0, I) codes",
        "batch_max_abs_diff": {"encoder": enc_diff, "decoder": dec_diff},
        "decoder_range": [min(ranges), max(ranges)],
    }
