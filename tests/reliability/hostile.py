"""Hypothesis strategies for malformed and hostile requests to every endpoint.

A case is (method, path suffix, content type, body): `path` is the archive's
operation (`encode`, `decode`, `sample`) or a hostile path. Bodies cover wrong
types, huge and non-finite numbers (NaN/Infinity tokens), deep nesting,
truncated or corrupted base64, non-image bytes under image content types,
oversized items and bodies, and wrong or missing content types; the
schema-shaped ones mutate a valid request in one place so that they get past
the first checks. Sizes come from the served model's manifest (latent size,
image shape) and from `handlers.limits.LIMITS`, never from copies.
"""

from __future__ import annotations

import base64
import io
import json
from functools import lru_cache

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from handlers.limits import LIMITS
from serving.archive import OPERATIONS
from tests.support.live import load_model

CONTENT_TYPES = (
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "text/plain",
    "text/plain; charset=latin-1",
    "image/png",
    "image/jpeg",
    "image/gif",
    "application/octet-stream",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/x-ndjson",
    "",
    None,  # no Content-Type header at all
)


class Case:
    """One request. A plain class: hypothesis prints it with this short __repr__."""

    def __init__(
        self, method: str, op: str, content_type: str | None, body: bytes, kind: str
    ) -> None:
        self.method = method
        self.op = op  # encode | decode | sample, or a hostile path suffix
        self.content_type = content_type
        self.body = body
        self.kind = kind  # which strategy made it (for the summary)

    def __repr__(self) -> str:  # keep hypothesis' report readable
        head = self.body[:160]
        return (
            f"Case({self.kind}: {self.method} {self.op} ctype={self.content_type!r} "
            f"len={len(self.body)} body={head!r}{'...' if len(self.body) > 160 else ''})"
        )


# ---- building blocks ----------------------------------------------------------------
def _png(arr: np.ndarray, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


@lru_cache(maxsize=1)
def samples() -> dict[str, bytes]:
    """Image bytes built once: a good PNG of the model's size, a JPEG, and oversized ones."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, image_hw(), dtype=np.uint8)
    jpeg = io.BytesIO()
    Image.fromarray(small, "L").save(jpeg, format="JPEG")
    gif = io.BytesIO()
    Image.fromarray(small, "L").save(gif, format="GIF")
    side = int(LIMITS.max_image_pixels**0.5) + 1  # one row more than allowed
    over_bytes = int(LIMITS.max_image_bytes * 1.075)
    return {
        "png": _png(small),
        "jpeg": jpeg.getvalue(),
        "gif": gif.getvalue(),
        "rgba": _png(rng.integers(0, 256, (40, 30, 4), dtype=np.uint8), "RGBA"),
        "too_many_pixels": _png(np.zeros((side, side), dtype=np.uint8)),
        # noise does not compress: just over the image byte limit
        "too_many_bytes": _png(rng.integers(0, 256, (over_bytes // 1024, 1024), dtype=np.uint8)),
    }


def latent_dim() -> int:
    return load_model().latent_dim


def image_hw() -> tuple[int, int]:
    """(height, width) of the model's images."""
    _, height, width = load_model().image_shape
    return height, width


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def good_pixels(value: float = 0.5) -> list:
    height, width = image_hw()
    return [[value] * width for _ in range(height)]


def good_body(op: str) -> dict:
    if op in ("encode", "score"):  # score takes encode's images
        return {"instances": [{"image_b64": b64(samples()["png"])}]}
    if op == "decode":
        return {"instances": [{"z": [0.1] * latent_dim()}]}
    return {"n": 2, "seed": 1}


def dumps(obj) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


# ---- values ------------------------------------------------------------------------
finite = st.floats(allow_nan=False, allow_infinity=False)
hostile_numbers = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 5e-324, -0.0]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**400]),
    finite,
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    hostile_numbers,
    st.text(max_size=40),
    st.binary(max_size=20).map(lambda b: b.decode("latin-1")),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=30,
)


# ---- bodies ------------------------------------------------------------------------
@st.composite
def mutated(draw, op: str) -> bytes:
    """A valid body of `op` with one field, item or value replaced by something hostile."""
    body = good_body(op)
    where = draw(st.sampled_from(["top", "item", "value", "extra", "count"]))
    if op == "sample" or where == "top":
        key = draw(
            st.sampled_from(
                ["n", "seed", "temperature", "format", "instances", "sample", "fpr", "error_map"]
            )
        )
        body[key] = draw(json_values)
    elif where == "item":
        item = draw(json_values)
        body["instances"] = draw(st.permutations([*body["instances"] * 2, item]))
    elif where == "value":
        if op in ("encode", "score"):
            rows = good_pixels()
            height, width = image_hw()
            r, c = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
            rows[r][c] = draw(json_values)
            if draw(st.booleans()):  # ragged: one row cut short (or left whole)
                rows[draw(st.integers(0, height - 1))] = rows[0][: draw(st.integers(0, width + 12))]
            body["instances"].append({"pixels": rows})
        else:
            dim = latent_dim()
            z = [0.0] * draw(st.sampled_from([0, 1, dim - 1, dim, dim + 1]))
            if z:
                z[draw(st.integers(0, len(z) - 1))] = draw(json_values)
            body["instances"].append({"z": z})
    elif where == "extra":
        body[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
    else:  # too many or zero items
        n = draw(st.sampled_from([0, LIMITS.max_items + 1, 1000]))
        body["instances"] = body["instances"][:1] * n
    return dumps(body)


@st.composite
def broken_images(draw) -> tuple[str, bytes]:
    """(content type, body): corrupted base64 in JSON, or raw non-image bytes."""
    s = samples()
    png = s[draw(st.sampled_from(["png", "jpeg", "rgba"]))]
    how = draw(
        st.sampled_from(
            ["truncate_b64", "corrupt_b64", "data_url", "raw_truncated", "raw_garbage", "gif"]
        )
    )
    text = b64(png)
    if how == "truncate_b64":
        text = text[: draw(st.integers(0, len(text) - 1))]
    elif how == "corrupt_b64":
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + draw(st.sampled_from(["%", "!", " ", "=", "\u00e9", "\x00"])) + text[i:]
    elif how == "data_url":
        text = draw(st.sampled_from(["data:", "data:image/png;base64,", "data:,"])) + text[:50]
    elif how == "gif":
        text = b64(s["gif"])
    if how in ("raw_truncated", "raw_garbage"):
        raw = (
            png[: draw(st.integers(0, len(png) - 1))]
            if how == "raw_truncated"
            else png[:8] + draw(st.binary(min_size=0, max_size=200))
        )
        return draw(st.sampled_from(["image/png", "image/jpeg", "application/octet-stream"])), raw
    return "application/json", dumps({"instances": [{"image_b64": text}]})


@st.composite
def nested(draw) -> bytes:
    depth = draw(st.sampled_from([10, 100, 1000, 10_000, 100_000]))
    shape = draw(st.sampled_from(["list", "dict", "in_pixels", "in_z"]))
    if shape == "list":
        return b"[" * depth + b"]" * depth
    if shape == "dict":
        return b'{"a":' * depth + b"1" + b"}" * depth
    inner = b"[" * depth + b"0.5" + b"]" * depth
    key = b"pixels" if shape == "in_pixels" else b"z"
    return b'{"instances":[{"' + key + b'":' + inner + b"}]}"


@st.composite
def oversized(draw) -> tuple[str, bytes]:
    s = samples()
    what = draw(st.sampled_from(["pixels", "bytes", "body", "raw_pixels"]))
    if what == "pixels":
        return "application/json", dumps({"instances": [{"image_b64": b64(s["too_many_pixels"])}]})
    if what == "bytes":
        return "application/json", dumps({"instances": [{"image_b64": b64(s["too_many_bytes"])}]})
    if what == "raw_pixels":
        return "image/png", s["too_many_pixels"]
    # just over the handler's body limit: JSON padded with spaces
    pad = LIMITS.max_body_bytes + draw(st.integers(1, 1000))
    return "application/json", b'{"n": 1' + b" " * pad + b"}"


@st.composite
def raw_text(draw) -> bytes:
    """Not JSON at all, or almost JSON."""
    return draw(
        st.one_of(
            st.binary(max_size=300),
            st.text(max_size=200).map(str.encode),
            st.sampled_from(
                [
                    b"",
                    b"null",
                    b"{",
                    b'{"instances": [',
                    b"\xef\xbb\xbf{}",  # BOM
                    b'{"n": 1}{"n": 2}',
                    b'{"n": 1, "n": 2}',
                    b'{"n": NaN}',
                    b'{"n": Infinity}',
                    b'{"n": 1e999}',
                    b'{"n": ' + b"9" * 5000 + b"}",
                    b'{"seed": -' + b"9" * 30 + b"}",
                    b'{"instances": [{"z": "\xff\xfe"}]}',
                    b'"\\ud800"',
                ]
            ),
        )
    )


# how often each kind is drawn (oversized bodies are few: each is megabytes)
KINDS = (
    ["mutated"] * 4
    + ["json_values"] * 2
    + ["broken_images"] * 2
    + ["raw_text"] * 2
    + ["ctype", "nested", "oversized"]
)


@st.composite
def cases(draw) -> Case:
    """Any hostile request to any of the endpoints."""
    op = draw(st.sampled_from(OPERATIONS))
    kind = draw(st.sampled_from(KINDS))
    ctype: str | None = "application/json"
    if kind == "json_values":
        body = dumps(draw(json_values))
    elif kind == "mutated":
        body = draw(mutated(op))
    elif kind == "broken_images":
        ctype, body = draw(broken_images())
    elif kind == "nested":
        body = draw(nested())
    elif kind == "raw_text":
        body = draw(raw_text())
    elif kind == "oversized":
        ctype, body = draw(oversized())
    else:  # a valid body under a wrong, odd or missing content type
        ctype = draw(st.sampled_from(CONTENT_TYPES))
        body = dumps(good_body(op)) if draw(st.booleans()) else samples()["png"]
    if kind != "ctype" and draw(st.integers(0, 9)) == 0:
        ctype = draw(st.sampled_from(CONTENT_TYPES))
    return Case("POST", op, ctype, body, kind)


@st.composite
def hostile_paths(draw) -> Case:
    """Wrong methods, versions and names on the predictions paths."""
    op = draw(st.sampled_from(OPERATIONS))
    method = draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "POST"]))
    suffix = draw(
        st.sampled_from(
            [op, f"{op}/1.0", f"{op}/9.9", f"{op}/..%2f..", f"{op}x", "", f"{op}/1.0/extra"]
        )
    )
    return Case(method, suffix, "application/json", dumps(good_body(op)), "path")
