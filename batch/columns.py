"""A block's answers as one Arrow table: a row per input item, the HTTP API's names.

Every table has `id` and, last, `error_code` / `error_message` (null when the
item succeeded; the other columns are null when it failed). In between:
- encode: `z_mean`, `z_log_var` (float32 lists; null for an AE), `converted_from`;
- score: `recon_nats`, `kl_nats`, `neg_elbo_nats`, `bits_per_dim`, `png_bits`
  (null where the API answers null), `scores` ({name: {score, p_value,
  is_outlier}}), `is_outlier` (the primary score's), `converted_from`;
- decode and sample: `image` (PNG bytes) or `pixels` (float32, H x W or
  H x W x C lists, `--format array`); sample adds each row's `seed`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from batch.convert import Inputs
from handlers.operations.base import channels_last
from handlers.wire import images

CONVERTED = pa.struct([("mode", pa.string()), ("width", pa.int32()), ("height", pa.int32())])
STATS = ("recon_nats", "kl_nats", "neg_elbo_nats", "bits_per_dim", "png_bits")


def _full(n: int, ok: list[int], values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values of the good rows -> (values of all n rows, zeros where failed; null mask)."""
    out = np.zeros((n, *values.shape[1:]), dtype=values.dtype)
    out[ok] = values
    mask = np.ones(n, dtype=bool)
    mask[ok] = False
    return out, mask


def float_lists(n: int, ok: list[int], values: np.ndarray) -> pa.Array:
    """(n_ok, d, ...) float32 -> n nested fixed-size lists (null where failed)."""
    full, mask = _full(n, ok, np.ascontiguousarray(values, dtype=np.float32))
    arr: pa.Array = pa.array(full.reshape(-1))
    for size in reversed(full.shape[2:]):
        arr = pa.FixedSizeListArray.from_arrays(arr, size)
    return pa.FixedSizeListArray.from_arrays(arr, full.shape[1], mask=pa.array(mask))


def _column(n: int, ok: list[int], values: list, type_: pa.DataType) -> pa.Array:
    full: list = [None] * n
    for i, v in zip(ok, values, strict=True):
        full[i] = v
    return pa.array(full, type=type_)


def _ids(ids: list) -> pa.Array:
    return pa.array(ids, type=pa.string() if ids and isinstance(ids[0], str) else pa.int64())


def table(ids: list, inputs: Inputs, columns: dict[str, pa.Array]) -> pa.Table:
    n, errors = len(ids), inputs.errors
    codes = [errors[i].code if i in errors else None for i in range(n)]
    messages = [
        f"{errors[i].field}: {errors[i].message}" if i in errors else None for i in range(n)
    ]
    return pa.table(
        {
            "id": _ids(ids),
            **columns,
            "error_code": pa.array(codes, pa.string()),
            "error_message": pa.array(messages, pa.string()),
        }
    )


def converted_from(n: int, inputs: Inputs) -> pa.Array:
    return pa.array([inputs.converted.get(i) for i in range(n)], type=CONVERTED)


def encode_columns(n: int, inputs: Inputs, outputs: tuple, vae: bool) -> dict[str, pa.Array]:
    ok = inputs.ok
    z_log_var = (
        float_lists(n, ok, outputs[1].numpy()) if vae else pa.nulls(n, pa.list_(pa.float32()))
    )
    return {
        "z_mean": float_lists(n, ok, outputs[0].numpy()),
        "z_log_var": z_log_var,
        "converted_from": converted_from(n, inputs),
    }


def score_columns(
    n: int, inputs: Inputs, summary: np.ndarray, names, scores, p_values, fpr, primary
) -> dict[str, pa.Array]:
    """The score operation's answers (`Score.summary` and its scores and p-values)."""
    ok, out = inputs.ok, {}
    for j, stat in enumerate(STATS):
        col = np.full(n, np.nan)
        col[ok] = summary[:, j]
        out[stat] = pa.array(col, mask=np.isnan(col), type=pa.float64())
    per = [
        {
            s: {
                "score": float(scores[i, k]),
                "p_value": float(p_values[i, k]),
                "is_outlier": bool(p_values[i, k] < fpr),
            }
            for k, s in enumerate(names)
        }
        for i in range(len(ok))
    ]
    entry = pa.struct(
        [("score", pa.float64()), ("p_value", pa.float64()), ("is_outlier", pa.bool_())]
    )
    out["scores"] = _column(n, ok, per, pa.struct([(s, entry) for s in names]))
    flags = (p_values[:, list(names).index(primary)] < fpr).tolist() if len(ok) else []
    out["is_outlier"] = _column(n, ok, flags, pa.bool_())
    out["converted_from"] = converted_from(n, inputs)
    return out


def image_columns(n: int, ok: list[int], pixels, fmt: str, scale: float) -> dict[str, pa.Array]:
    """A decoder's output (n_ok, C, H, W) -> `image` (PNG bytes) or `pixels` (float32)."""
    arr = channels_last(pixels)
    if fmt == "array":
        return {"pixels": float_lists(n, ok, np.clip(arr, 0.0, 1.0))}
    pngs = [images.png_bytes(a, scale) for a in arr]
    return {"image": _column(n, ok, pngs, pa.binary())}
