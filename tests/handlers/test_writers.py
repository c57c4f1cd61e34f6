"""Response writing: floats as exact, short JSON text; images as PNG or pixel lists."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from handlers.wire import json_write


def test_write_float_arrays_prints_every_float32_exactly():
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.standard_normal(2000) * 10.0 ** rng.integers(-30, 30, 2000),
            [0.0, -0.0, 1.0, -1.0, 1e-45, -1e-45, 3.4028235e38, -3.4028235e38, 1.1754944e-38],
        ]
    ).astype(np.float32)
    rows = values[: len(values) // 7 * 7].reshape(-1, 7)
    texts = json_write.write_float_arrays(rows)
    parsed = [json.loads(t) for t in texts]
    assert all(type(v) is float for row in parsed for v in row)  # 0.0 is not read as 0
    back = np.array(parsed, dtype=np.float32)
    assert back.tobytes() == rows.tobytes()  # bit-exact, signed zeros included
    assert all(len(t) < len(json.dumps(r.tolist())) for t, r in zip(texts, rows, strict=True))
    # no integral value (|v| < 1, not 0): the one-format path, just as exact
    small = rng.uniform(0.001, 0.999, (50, 7)) * rng.choice([-1, 1], (50, 7))
    small = (small * 10.0 ** -rng.integers(0, 30, (50, 7))).astype(np.float32)
    assert json_write.printable_floats(small)[1] == json_write.FLOAT
    back = np.array([json.loads(t) for t in json_write.write_float_arrays(small)], dtype=np.float32)
    assert back.tobytes() == small.tobytes()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_write_float_arrays_refuses_non_finite_values(bad):
    rows = np.zeros((2, 3), np.float32)
    rows[1, 2] = bad
    with pytest.raises(ValueError, match="not JSON compliant"):
        json_write.write_float_arrays(rows)


def test_write_images_as_pixel_lists_or_png():
    arr = np.random.default_rng(0).random((2, 28, 28)).astype(np.float32)
    lists = json_write.write_images(arr, "array", 255.0)
    assert len(lists) == 2 and all(set(p) == {"pixels"} for p in lists)
    assert np.abs(np.array(lists[1]["pixels"]) - arr[1]).max() <= 5e-7  # 6 decimals
    pngs = json_write.write_images(arr, "png", 255.0)
    img = Image.open(io.BytesIO(base64.b64decode(pngs[0]["image_b64"])))
    assert (img.format, img.mode, img.size) == ("PNG", "L", (28, 28))
    assert np.array_equal(np.asarray(img), np.rint(arr[0].astype(np.float64) * 255))


def test_write_json_is_compact_and_refuses_nan():
    assert json_write.write_json({"a": [1, 2.5], "b": None}) == '{"a":[1,2.5],"b":null}'
    with pytest.raises(ValueError):
        json_write.write_json({"a": float("nan")})
