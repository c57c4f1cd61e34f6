"""A job's input, cut into blocks: what the driver plans (an actor reads a block's
items: `batch.reading`).

Inputs (`plan`), by what the path is:
- a folder of PNG/JPEG files, recursively (ids: the path relative to the folder);
- an IDX images file, gzipped or not (the MNIST-family datasets);
- a `.npy` array of images, uint8 or float, (n, H, W) or (n, H, W, C) (ids, here and
  for IDX: the item's index);
- Parquet (a file, or a folder of `.parquet` files) with an `image` column of
  encoded bytes or a `pixels` column (H x W or H x W x C lists, or flat;
  integers are 0-255 pixel values, floats [0, 1]); ids: its `id` column, else
  the row's index across the sorted files;
- decode's latents: a `.npy` (n, D) array, or Parquet with a `z` (or
  `z_mean`, what encode writes) column of float lists.

The driver reads only listings and headers. A block is a range of items of
one file (or of the folder's sorted listing) and its identity (`Block.key`) is
a hash of what it covers, so a rerun of the same command on the same input plans the same blocks.
Anything wrong with the input as a whole (missing, empty, an array of another
shape) raises `InputError` before Ray starts; what is wrong with one item
becomes that item's error row.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import struct
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batch.storage import Location, listing, locate

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FOLDER, IDX, NPY, PARQUET = "folder", "idx", "npy", "parquet"
IMAGES, LATENTS = "images", "latents"  # what an operation reads
_IDX_UBYTE = 0x08


class InputError(ValueError):
    """The input as a whole cannot be read: the job stops before it starts."""


@dataclass(frozen=True)
class Block:
    index: int
    kind: str  # FOLDER | IDX | NPY | PARQUET
    source: str  # the file's URI (FOLDER: the folder's)
    start: int  # items [start, stop) of the source (FOLDER: of `files`' listing)
    stop: int
    files: tuple[str, ...] = ()  # FOLDER: the block's files, relative to the folder
    column: str = ""  # PARQUET: the column read
    first_id: int = 0  # PARQUET without an id column: the id of row 0 (earlier files' rows)

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def key(self) -> str:
        what = [self.kind, self.source, self.start, self.stop, list(self.files), self.column]
        what += [self.first_id] if self.first_id else []
        return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]

    def to_row(self) -> dict:
        """As a row of the job's Ray dataset (flat values; files as JSON)."""
        return {
            "block": self.index,
            "kind": self.kind,
            "source": self.source,
            "start": self.start,
            "stop": self.stop,
            "files": json.dumps(list(self.files)),
            "column": self.column,
            "first_id": self.first_id,
        }

    @classmethod
    def from_row(cls, row: dict) -> Block:
        return cls(
            int(row["block"]),
            str(row["kind"]),
            str(row["source"]),
            int(row["start"]),
            int(row["stop"]),
            tuple(json.loads(str(row["files"]))),
            str(row["column"]),
            int(row["first_id"]),
        )


@dataclass
class Plan:
    kind: str
    input: str
    blocks: list[Block]
    fingerprint: str  # sha256 over the input's files, sizes and modification times
    item_shape: tuple[int, ...] | None = None  # arrays: each item's shape

    @property
    def rows(self) -> int:
        return sum(b.rows for b in self.blocks)


# ---- planning (the driver) --------------------------------------------------------
def plan(where: str, reads: str, block_items: int, limit: int | None = None) -> Plan:
    """The input at `where` cut into blocks of at most `block_items` items."""
    loc = locate(where)
    info = loc.info()
    if info.type.name == "NotFound":
        raise InputError(f"input {where} does not exist")
    if loc.is_dir():
        files = listing(loc)
        images = [f for f in files if f.path.lower().endswith(IMAGE_SUFFIXES)]
        parquets = [f for f in files if f.path.endswith(".parquet")]
        if reads == IMAGES and images:
            return _plan_folder(loc, images, block_items, limit)
        if parquets:
            return _plan_parquet(
                loc, sorted(parquets, key=lambda f: f.path), reads, block_items, limit
            )
        what = "PNG/JPEG or .parquet" if reads == IMAGES else ".parquet"
        raise InputError(f"input folder {where} holds no {what} files")
    if loc.path.endswith(".parquet"):
        return _plan_parquet(locate(loc.uri), [info], reads, block_items, limit, single=True)
    if loc.path.endswith(".npy"):
        return _plan_npy(loc, info, reads, block_items, limit)
    if reads == IMAGES and idx_header(loc) is not None:
        return _plan_idx(loc, info, block_items, limit)
    kinds = "a folder of PNG/JPEG files, an IDX file, .npy or Parquet"
    if reads == LATENTS:
        kinds = ".npy (n, latent_dim) or Parquet with a z column"
    raise InputError(f"input {where}: not a readable input ({kinds})")


def _fingerprint(infos) -> str:
    h = hashlib.sha256()
    for i in infos:
        h.update(f"{i.path}\0{i.size}\0{i.mtime_ns}\n".encode())
    return h.hexdigest()


def _ranges(total: int, block_items: int, limit: int | None) -> list[tuple[int, int]]:
    total = total if limit is None else min(total, limit)
    return [(s, min(s + block_items, total)) for s in range(0, total, block_items)]


def _plan_folder(loc: Location, images, block_items: int, limit: int | None) -> Plan:
    root = loc.path.rstrip("/") + "/"
    names = sorted(i.path[len(root) :] for i in images)
    blocks = [
        Block(n, FOLDER, loc.uri, s, e, tuple(names[s:e]))
        for n, (s, e) in enumerate(_ranges(len(names), block_items, limit))
    ]
    return Plan(FOLDER, loc.uri, blocks, _fingerprint(sorted(images, key=lambda i: i.path)))


def idx_header(loc: Location) -> tuple[tuple[int, ...], int] | None:
    """(dims, data offset) of an IDX ubyte file (gzipped or not), else None."""
    with loc.fs.open_input_stream(loc.path) as f:
        head = f.read(64)
    if head[:2] == b"\x1f\x8b":
        with loc.fs.open_input_stream(loc.path) as f, gzip.GzipFile(fileobj=f) as g:
            head = g.read(64)
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] != _IDX_UBYTE or not 1 <= head[3] <= 4:
        return None
    ndim = head[3]
    if len(head) < 4 + 4 * ndim:
        return None
    return struct.unpack(f">{ndim}I", head[4 : 4 + 4 * ndim]), 4 + 4 * ndim


def _plan_idx(loc: Location, info, block_items: int, limit: int | None) -> Plan:
    dims, _ = idx_header(loc)
    if len(dims) not in (3, 4):
        raise InputError(f"input {loc.uri}: IDX of dims {list(dims)}; images are (n, H, W)")
    ranges = _ranges(dims[0], block_items, limit)
    blocks = [Block(n, IDX, loc.uri, s, e) for n, (s, e) in enumerate(ranges)]
    return Plan(IDX, loc.uri, blocks, _fingerprint([info]), tuple(dims[1:]))


def npy_header(loc: Location) -> tuple[tuple[int, ...], np.dtype, int]:
    with loc.fs.open_input_file(loc.path) as f:
        try:
            shape, fortran, dtype = _read_npy_header(f)
        except (ValueError, SyntaxError, KeyError, TypeError) as err:
            raise InputError(f"input {loc.uri}: not a .npy array ({err})") from None
        offset = f.tell()
    if fortran and len(shape) > 1:
        raise InputError(f"input {loc.uri}: a Fortran-ordered array; save it C-ordered")
    return tuple(shape), dtype, offset


def _read_npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of a .npy stream of any format version (1.0, 2.0,
    3.0), read with numpy's public helpers only (its reader of every version is private)."""
    major, _ = np.lib.format.read_magic(f)
    if major not in (1, 2, 3):
        raise ValueError(f"unknown .npy format version {major}")
    size = 2 if major == 1 else 4
    raw = f.read(size)
    if len(raw) != size:
        raise ValueError("truncated header")
    length = int.from_bytes(raw, "little")
    header = f.read(length).decode("latin1" if major < 3 else "utf8")
    d = ast.literal_eval(header)
    if not isinstance(d, dict) or {"descr", "fortran_order", "shape"} - d.keys():
        raise ValueError(f"bad header {header!r}")
    shape = tuple(int(n) for n in d["shape"])
    return shape, bool(d["fortran_order"]), np.lib.format.descr_to_dtype(d["descr"])


def _plan_npy(loc: Location, info, reads: str, block_items: int, limit: int | None) -> Plan:
    shape, dtype, _ = npy_header(loc)
    if reads == IMAGES:
        if not (dtype == np.uint8 or dtype.kind == "f") or len(shape) not in (3, 4):
            raise InputError(
                f"input {loc.uri}: {dtype} array of shape {list(shape)}; images are uint8 or "
                "float arrays of shape (n, H, W) or (n, H, W, C)"
            )
    elif dtype.kind != "f" or len(shape) != 2:
        raise InputError(
            f"input {loc.uri}: {dtype} array of shape {list(shape)}; latents are a float "
            "array of shape (n, latent_dim)"
        )
    ranges = _ranges(shape[0], block_items, limit)
    blocks = [Block(n, NPY, loc.uri, s, e) for n, (s, e) in enumerate(ranges)]
    return Plan(NPY, loc.uri, blocks, _fingerprint([info]), tuple(shape[1:]))


def parquet_column(names: list[str], reads: str, where: str) -> str:
    """The column a Parquet input is read from."""
    wanted = ("image", "pixels") if reads == IMAGES else ("z", "z_mean")
    for name in wanted:
        if name in names:
            return name
    raise InputError(
        f"input {where}: Parquet without a {' or '.join(map(repr, wanted))} column "
        f"(columns: {', '.join(names)})"
    )


def _plan_parquet(loc: Location, infos, reads, block_items, limit, single=False) -> Plan:
    blocks, column, left, seen, ids = [], "", limit, 0, None
    for info in infos:
        uri = loc.uri if single else _child_uri(loc, info.path)
        with loc.fs.open_input_file(info.path) as f:
            try:
                meta = pq.ParquetFile(f).metadata
            except (pa.ArrowInvalid, OSError) as err:
                raise InputError(f"input {uri}: not a readable Parquet file ({err})") from None
            names = meta.schema.to_arrow_schema().names
        col = parquet_column(names, reads, uri)
        if column and col != column:
            raise InputError(f"input {loc.uri}: its files hold different columns ({column}, {col})")
        column = col
        if ids is not None and ids != ("id" in names):
            raise InputError(f"input {loc.uri}: some of its files have an id column, some not")
        ids = "id" in names
        for s, e in _ranges(meta.num_rows, block_items, left):
            blocks.append(Block(len(blocks), PARQUET, uri, s, e, column=column, first_id=seen))
        seen += meta.num_rows
        if left is not None:
            left -= min(meta.num_rows, left)
            if left == 0:
                break
    return Plan(PARQUET, loc.uri, blocks, _fingerprint(infos))


def _child_uri(folder: Location, path: str) -> str:
    rel = path[len(folder.path.rstrip("/")) + 1 :]
    return folder.uri.rstrip("/") + "/" + rel
