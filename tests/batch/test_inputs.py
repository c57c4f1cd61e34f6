"""A job's input, planned and read without Ray (batch/sources.py, batch/reading.py): every
input kind the CLI takes, block identities that a rerun finds again, and inputs that fail
at once."""

from __future__ import annotations

import gzip
import io
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch.reading import read_block
from batch.sources import IMAGES, LATENTS, InputError, plan
from tests.support.batchjobs import fashion, png_bytes

MAX_BYTES = 1 << 20


def idx_bytes(a: np.ndarray) -> bytes:
    return (
        struct.pack(">BBBB", 0, 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
    )


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def read_all(p, max_bytes=MAX_BYTES):
    items = [read_block(b, max_bytes) for b in p.blocks]
    ids = [i for it in items for i in it.ids]
    return items, ids


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return fashion(50)


@pytest.mark.parametrize("gz", [False, True], ids=["idx", "idx.gz"])
def test_idx_in_blocks_with_limit(tmp_path, images, gz):
    data = idx_bytes(images)
    path = tmp_path / ("x.idx3-ubyte" + ".gz" * gz)
    path.write_bytes(gzip.compress(data) if gz else data)
    p = plan(str(path), IMAGES, block_items=16, limit=45)
    assert p.kind == "idx" and p.item_shape == (28, 28)
    assert [(b.start, b.stop) for b in p.blocks] == [(0, 16), (16, 32), (32, 45)]
    items, ids = read_all(p)
    assert ids == list(range(45))
    np.testing.assert_array_equal(np.concatenate([i.array for i in items]), images[:45])


def test_npy_uint8_and_float(tmp_path, images):
    np.save(tmp_path / "u8.npy", images)
    items, ids = read_all(plan(str(tmp_path / "u8.npy"), IMAGES, 20))
    assert ids == list(range(50))
    np.testing.assert_array_equal(np.concatenate([i.array for i in items]), images)
    # big-endian floats of a .npy written by another tool: read as they are
    floats = (images / 255.0).astype(">f4")
    np.save(tmp_path / "f.npy", floats)
    p = plan(str(tmp_path / "f.npy"), IMAGES, 64)
    (items,) = [read_block(b, MAX_BYTES) for b in p.blocks]
    np.testing.assert_array_equal(items.array, floats)


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_npy_header_versions(tmp_path, images, version):
    """numpy writes 2.0 and 3.0 headers when it must (long headers, unicode field
    names); the planner reads every version with numpy's public helpers."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, images[:5], version=version)
    (tmp_path / "v.npy").write_bytes(buf.getvalue())
    p = plan(str(tmp_path / "v.npy"), IMAGES, 64)
    assert p.item_shape == (28, 28)
    np.testing.assert_array_equal(read_block(p.blocks[0], MAX_BYTES).array, images[:5])


def test_folder_recursive_sorted_ids_and_stable_keys(tmp_path, images):
    for i, a in enumerate(images[:7]):
        sub = tmp_path / "in" / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i}.png").write_bytes(png_bytes(a))
    (tmp_path / "in" / "README.md").write_text("not listed")
    (tmp_path / "in" / "c.JPEG").write_bytes(b"listed: upper-case suffix")
    p = plan(str(tmp_path / "in"), IMAGES, 3)
    names = [n for b in p.blocks for n in b.files]
    assert names == sorted(names) and len(names) == 8 and "c.JPEG" in names
    assert "README.md" not in names and all("/" in n for n in names if n != "c.JPEG")
    # the same input plans the same blocks: what resume relies on
    again = plan(str(tmp_path / "in"), IMAGES, 3)
    assert [b.key for b in again.blocks] == [b.key for b in p.blocks]
    assert again.fingerprint == p.fingerprint
    assert len({b.key for b in p.blocks}) == len(p.blocks)
    items, ids = read_all(p)
    assert ids == names
    assert items[0].encoded[0] == (tmp_path / "in" / names[0]).read_bytes()


def test_folder_oversized_file_is_an_item_error_not_read(tmp_path, images):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "big.png").write_bytes(b"\0" * 2000)
    (tmp_path / "in" / "ok.png").write_bytes(png_bytes(images[0]))
    (block,) = plan(str(tmp_path / "in"), IMAGES, 10).blocks
    items = read_block(block, max_file_bytes=1000)
    assert items.encoded[0] is None and items.errors[0].code == "payload_too_large"
    assert items.encoded[1] is not None and 1 not in items.errors


def test_parquet_image_bytes_pixels_and_ids(tmp_path, images):
    pngs = [png_bytes(a) for a in images[:6]] + [None]
    pq.write_table(
        pa.table({"id": [f"k{i}" for i in range(7)], "image": pngs}),
        tmp_path / "img.parquet",
        row_group_size=3,
    )
    p = plan(str(tmp_path / "img.parquet"), IMAGES, 4)
    items, ids = read_all(p)
    assert ids == [f"k{i}" for i in range(7)]  # the file's own id column
    assert items[1].encoded[2] is None and items[1].errors[2].code == "bad_image"
    # pixels, flat or nested, in a folder of two files
    folder = tmp_path / "px"
    folder.mkdir()
    pq.write_table(
        pa.table({"pixels": [a.ravel().tolist() for a in images[:3]]}), folder / "a.parquet"
    )
    pq.write_table(pa.table({"pixels": [a.tolist() for a in images[3:5]]}), folder / "b.parquet")
    p = plan(str(folder), IMAGES, 10)
    assert [b.rows for b in p.blocks] == [3, 2]
    items, ids = read_all(p)
    assert ids == [0, 1, 2, 3, 4]  # without an id column: the row across the sorted files
    np.testing.assert_array_equal(items[0].array[1], images[1].ravel())
    np.testing.assert_array_equal(items[1].array[0], images[3])


def test_latents_npy_and_parquet(tmp_path):
    z = np.random.default_rng(0).standard_normal((9, 4)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    (items,) = [read_block(b, MAX_BYTES) for b in plan(str(tmp_path / "z.npy"), LATENTS, 9).blocks]
    np.testing.assert_array_equal(items.array, z)
    # encode's own output as decode's input: z_mean
    pq.write_table(
        pa.table({"id": list("abcdefghi"), "z_mean": z.tolist()}), tmp_path / "e.parquet"
    )
    (items,) = [
        read_block(b, MAX_BYTES) for b in plan(str(tmp_path / "e.parquet"), LATENTS, 9).blocks
    ]
    assert items.ids == list("abcdefghi")
    np.testing.assert_allclose(np.stack(items.array), z)


@pytest.mark.parametrize(
    "make, reads, message",
    [
        (lambda d: d / "missing", IMAGES, "does not exist"),
        (lambda d: (d / "empty").mkdir() or d / "empty", IMAGES, "holds no PNG/JPEG"),
        (lambda d: np.save(d / "x.npy", np.zeros((3, 4))) or d / "x.npy", IMAGES, "images are"),
        (lambda d: np.save(d / "x.npy", np.zeros((3, 4, 5))) or d / "x.npy", LATENTS, "latents"),
        (lambda d: write(d / "x.npy", b"\x93NUMPY\x01\x00\x04\x00{}  "), IMAGES, "not a .npy"),
        (lambda d: write(d / "x.bin", b"\0" * 64), IMAGES, "not a readable"),
        (lambda d: write(d / "x.parquet", b"PAR1"), IMAGES, "Parquet"),
        (
            lambda d: pq.write_table(pa.table({"label": [1]}), d / "x.parquet") or d / "x.parquet",
            IMAGES,
            "without a 'image' or 'pixels' column",
        ),
    ],
    ids=[
        "missing",
        "empty-folder",
        "npy-2d",
        "latents-3d",
        "npy-garbage",
        "unknown",
        "parquet-garbage",
        "parquet-columns",
    ],  # fmt: skip
)
def test_unreadable_inputs_fail_before_the_job(tmp_path, make, reads, message):
    with pytest.raises(InputError, match=message):
        plan(str(make(tmp_path)), reads, 10)
