"""Image sources read into a model's pixels: folders of PNG/JPEG, IDX files, .npy arrays.

    read_images(path, (C, H, W))         -> uint8 (N, C, H, W)
    read_image_folder(path, (C, H, W))   -> (uint8 (N, C, H, W), relative paths)
    source_sha256(path)                  -> the sha256 a manifest records as the data's identity

Every image is converted as the server converts an upload
(`handlers/wire/images.py`, which training does not import: the same steps are
written here, and tests/training/test_sources.py checks that both give the same
pixels): C = 1 -> 8-bit grayscale 'L', C = 3 -> 'RGB' (grayscale replicated);
16-bit images scaled to 8 bits; transparency composited onto black; then resized
with LANCZOS to (W, H) when the size differs. So a model sees in training what
it will be sent when served.

A folder is read recursively, files sorted by relative path (POSIX form);
files without a .png/.jpg/.jpeg suffix are skipped with a warning, hidden
files and folders silently. Every failure is a `SourceError` (a ValueError)
naming the path.
"""

from __future__ import annotations

import gzip
import hashlib
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_FORMATS = ("PNG", "JPEG")
MODES = {1: "L", 3: "RGB"}  # channels -> the PIL mode the model reads
FLOAT_DTYPES = (np.float16, np.float32, np.float64)


class DataError(RuntimeError):
    """A dataset file is missing or corrupt; the message names the file and the problem."""


class SourceError(DataError, ValueError):
    """An image source cannot be read as images of the asked shape; names the path."""


# --------------------------------------------------------------------------- IDX
def read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when they are a gzip stream."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DataError(f"{path}: corrupt gzip stream ({e})") from None
    return raw


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse an IDX file holding unsigned bytes (type 0x08) into an array."""
    if len(raw) < 4:
        raise DataError(f"{name}: too short for an IDX header ({len(raw)} bytes)")
    zero, dtype_code, ndim = raw[0] << 8 | raw[1], raw[2], raw[3]
    if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 3:
        raise DataError(
            f"{name}: bad IDX magic {raw[:4].hex()} (expected 00000801 or 00000803, uint8 data)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(
            f"{name}: dimensions {dims} need {expected} data bytes, file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


# -------------------------------------------------------------------- conversion
def check_shape(image_shape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or shape[0] not in MODES or min(shape[1:]) < 1:
        raise ValueError(f"image_shape must be (C, H, W) with C in {{1, 3}}, got {image_shape}")
    return shape


def _flatten(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer images -> 'L'; transparency composited onto black (RGBA)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        return Image.fromarray(np.clip(np.rint(arr / peak * 255), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return img


def convert_image(img: Image.Image, image_shape) -> np.ndarray:
    """A PIL image -> uint8 (C, H, W) in the model's mode and size, as the server does."""
    c, h, w = check_shape(image_shape)
    mode = MODES[c]
    if img.mode != mode or img.size != (w, h):
        img = _flatten(img).convert(mode)
        if img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.LANCZOS)
    arr = np.frombuffer(img.tobytes(), dtype=np.uint8)
    return arr.reshape(1, h, w) if c == 1 else arr.reshape(h, w, 3).transpose(2, 0, 1)


def convert_array(images: np.ndarray, image_shape, where: str = "<array>") -> np.ndarray:
    """uint8 images (N, H, W) grayscale or (N, H, W, K) with K in {1, 3, 4} (gray, RGB,
    RGBA) -> uint8 (N, C, H, W) in the model's mode and size (`convert_image`'s rules)."""
    c, h, w = check_shape(image_shape)
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise SourceError(f"{where}: expected uint8 pixels, got {images.dtype}")
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim == 3:
        kind = "L"
    elif images.ndim == 4 and images.shape[-1] in (3, 4):
        kind = "RGB" if images.shape[-1] == 3 else "RGBA"
    else:
        raise SourceError(f"{where}: cannot read images of shape {images.shape}")
    n = len(images)
    if images.shape[1:3] == (h, w) and kind != "RGBA":
        # the same pixels Pillow gives (L -> RGB replicates; RGB -> L needs Pillow's rounding)
        if kind == "L":
            gray = images[:, None]
            return np.ascontiguousarray(gray if c == 1 else np.repeat(gray, 3, axis=1))
        if c == 3:
            return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    out = np.empty((n, c, h, w), dtype=np.uint8)
    quiet = True if n < 5000 else None  # None: tqdm shows a bar on a terminal only
    for i in tqdm(range(n), desc=f"converting {Path(where).name}", disable=quiet):
        out[i] = convert_image(Image.fromarray(np.ascontiguousarray(images[i]), kind), (c, h, w))
    return out


# ----------------------------------------------------------------------- folders
def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def list_image_files(root: Path) -> list[Path]:
    """The PNG/JPEG files under `root` (recursive), sorted by relative POSIX path."""
    root = Path(root)
    if not root.exists():
        raise SourceError(f"{root}: not found")
    if not root.is_dir():
        raise SourceError(f"{root}: not a folder")
    found, skipped = [], []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if _hidden(rel) or not path.is_file():
            continue
        (found if path.suffix.lower() in IMAGE_SUFFIXES else skipped).append(rel)
    if skipped:
        names = ", ".join(sorted(p.as_posix() for p in skipped)[:5])
        warnings.warn(
            f"{root}: skipped {len(skipped)} file(s) that are not .png/.jpg/.jpeg: {names}",
            stacklevel=2,
        )
    if not found:
        raise SourceError(f"{root}: no PNG or JPEG images in this folder (searched recursively)")
    return [root / p for p in sorted(found, key=lambda p: p.as_posix())]


def read_image_file(path: Path, image_shape) -> np.ndarray:
    """One PNG or JPEG file -> uint8 (C, H, W)."""
    try:
        with Image.open(path) as img:
            if img.format not in IMAGE_FORMATS:
                raise SourceError(f"{path}: only PNG and JPEG are read, this is {img.format}")
            img.load()
            return convert_image(img, image_shape)
    except SourceError:
        raise
    except FileNotFoundError:
        raise SourceError(f"{path}: not found") from None
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
    ) as e:
        raise SourceError(f"{path}: not a readable PNG or JPEG image ({e})") from None


def read_image_folder(path: Path | str, image_shape) -> tuple[np.ndarray, list[str]]:
    """Every PNG/JPEG under `path` -> (uint8 (N, C, H, W), their relative POSIX paths),
    in the order of the paths."""
    shape, path = check_shape(image_shape), Path(path)
    files = list_image_files(path)
    out = np.empty((len(files), *shape), dtype=np.uint8)
    quiet = True if len(files) < 500 else None
    for i, file in enumerate(tqdm(files, desc=f"reading {path.name}", disable=quiet)):
        out[i] = read_image_file(file, shape)
    return out, [f.relative_to(path).as_posix() for f in files]


# ---------------------------------------------------------------------- arrays
def read_npy(path: Path, image_shape) -> np.ndarray:
    """A .npy array of images -> uint8 (N, C, H, W).

    uint8 pixels, or floats in [0, 1] (scaled by 255 and rounded); shaped (N, H, W),
    (N, H, W, K) or (N, K, H, W) with K in {1, 3, 4}. When both of the last two
    could be the channel axis, the one that matches `image_shape` decides."""
    c, h, w = check_shape(image_shape)
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise SourceError(f"{path}: not found") from None
    except (OSError, ValueError, EOFError) as e:
        raise SourceError(f"{path}: not a readable .npy array ({e})") from None
    if not isinstance(arr, np.ndarray):
        raise SourceError(f"{path}: not a single .npy array")
    if arr.dtype in FLOAT_DTYPES:
        if arr.size and not (np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1):
            raise SourceError(f"{path}: float pixels must be finite and in [0, 1]")
        arr = np.rint(arr.astype(np.float64) * 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise SourceError(f"{path}: unsupported dtype {arr.dtype} (uint8, or float in [0, 1])")
    if arr.ndim == 4:
        first, last = arr.shape[1] in (1, 3, 4), arr.shape[-1] in (1, 3, 4)
        if first and last:  # e.g. (N, 3, 5, 3): ask the model's shape which it is
            if arr.shape[1:] == (c, h, w):
                last = False
            elif arr.shape[1:] != (h, w, c):
                raise SourceError(
                    f"{path}: shape {arr.shape} is ambiguous (channels first or last?); "
                    f"save it as (N, H, W, C) or (N, C, H, W) for image_shape {(c, h, w)}"
                )
        if first and not last:
            arr = arr.transpose(0, 2, 3, 1)
        elif not last:
            raise SourceError(f"{path}: shape {arr.shape} has no channel axis of 1, 3 or 4")
    elif arr.ndim != 3:
        raise SourceError(
            f"{path}: unsupported shape {arr.shape}; expected (N, H, W), (N, H, W, C) "
            "or (N, C, H, W)"
        )
    return convert_array(arr, (c, h, w), str(path))


def read_idx_images(path: Path, image_shape) -> np.ndarray:
    """An IDX images file (N, H, W), gzipped or not -> uint8 (N, C, H, W)."""
    try:
        arr = parse_idx(read_bytes(path), str(path))
    except SourceError:
        raise
    except DataError as e:
        raise SourceError(str(e)) from None
    if arr.ndim != 3:
        raise SourceError(f"{path}: {arr.ndim}-D IDX data, expected 3-D images (N, H, W)")
    return convert_array(arr, image_shape, str(path))


# ------------------------------------------------------------------------ entry
def read_images(path: Path | str, image_shape: tuple[int, int, int]) -> np.ndarray:
    """Images from a folder of PNG/JPEG files, one PNG/JPEG file, an IDX images file
    (gzipped or not) or a .npy array -> uint8 (N, C, H, W) of `image_shape`."""
    shape = check_shape(image_shape)
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: not found")
    if path.is_dir():
        return read_image_folder(path, shape)[0]
    if path.suffix.lower() == ".npy":
        return read_npy(path, shape)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return read_image_file(path, shape)[None]
    return read_idx_images(path, shape)


def source_sha256(path: Path | str) -> str:
    """The data's identity: sha256 of a file's bytes, or for a folder over every image
    file read (relative path, size and bytes, in the reading order)."""
    path = Path(path)
    digest = hashlib.sha256()
    if not path.is_dir():
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        except FileNotFoundError:
            raise SourceError(f"{path}: not found") from None
        return digest.hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reader already said what it skips
        files = list_image_files(path)
    for file in files:
        data = file.read_bytes()
        rel = file.relative_to(path).as_posix().encode()
        digest.update(len(rel).to_bytes(8, "big") + rel + len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()
