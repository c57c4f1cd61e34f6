"""A job's input, cut into blocks: what the driver plans and what each actor reads.

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

The driver reads only listings and headers; an actor reads its block's items
(`read_block`). A block is a range of items of one file (or of the folder's
sorted listing) and its identity (`Block.key`) is a hash of what it covers,
so a rerun of the same command on the same input plans the same blocks.
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
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch.storage import Location, listing, locate
from handlers.errors import RequestError

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


@dataclass
class Items:
    """A block's items as read: encoded images, or an array; ids; per-item read errors."""

    ids: list
    encoded: list[bytes | None] | None = None  # FOLDER, Parquet `image`
    array: np.ndarray | None = None  # IDX, .npy, Parquet `pixels` / `z` (bad rows: zeros)
    errors: dict[int, RequestError] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


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
    if reads == IMAGES and _idx_header(loc) is not None:
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


def _idx_header(loc: Location) -> tuple[tuple[int, ...], int] | None:
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
    dims, _ = _idx_header(loc)
    if len(dims) not in (3, 4):
        raise InputError(f"input {loc.uri}: IDX of dims {list(dims)}; images are (n, H, W)")
    ranges = _ranges(dims[0], block_items, limit)
    blocks = [Block(n, IDX, loc.uri, s, e) for n, (s, e) in enumerate(ranges)]
    return Plan(IDX, loc.uri, blocks, _fingerprint([info]), tuple(dims[1:]))


def _npy_header(loc: Location) -> tuple[tuple[int, ...], np.dtype, int]:
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
    shape, dtype, _ = _npy_header(loc)
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


# ---- reading a block (an actor) -------------------------------------------------------
def read_block(block: Block, max_file_bytes: int) -> Items:
    """The block's items. Files over `max_file_bytes` are not read: they are errors."""
    if block.kind == FOLDER:
        return _read_files(block, max_file_bytes)
    if block.kind == NPY:
        return _read_npy(block)
    if block.kind == IDX:
        return _read_idx(block)
    return _read_parquet(block)


def _read_files(block: Block, max_file_bytes: int) -> Items:
    folder = locate(block.source)
    encoded: list[bytes | None] = []
    errors: dict[int, RequestError] = {}
    for i, name in enumerate(block.files):
        loc = folder.join(name)
        try:
            size = loc.info().size
            if size is not None and size > max_file_bytes:
                raise RequestError(
                    "payload_too_large",
                    "file",
                    f"{size} bytes; an image may have at most {max_file_bytes} bytes",
                )
            encoded.append(loc.read_bytes())
        except RequestError as err:
            errors[i] = err
            encoded.append(None)
        except OSError as err:
            errors[i] = RequestError("bad_image", "file", f"could not read the file: {err}")
            encoded.append(None)
    return Items(list(block.files), encoded=encoded, errors=errors)


def _read_npy(block: Block) -> Items:
    loc = locate(block.source)
    shape, dtype, offset = _npy_header(loc)
    per_item = int(np.prod(shape[1:])) * dtype.itemsize
    with loc.fs.open_input_file(loc.path) as f:
        f.seek(offset + block.start * per_item)
        data = f.read(block.rows * per_item)
    array = np.frombuffer(data, dtype=dtype).reshape(block.rows, *shape[1:])
    return Items(list(range(block.start, block.stop)), array=array)


def _read_idx(block: Block) -> Items:
    loc = locate(block.source)
    dims, offset = _idx_header(loc)
    per_item = int(np.prod(dims[1:]))
    with loc.fs.open_input_stream(loc.path) as raw:
        head = raw.read(2)
    with loc.fs.open_input_stream(loc.path) as raw:
        f = gzip.GzipFile(fileobj=raw) if head == b"\x1f\x8b" else raw
        _skip(f, offset + block.start * per_item)
        data = f.read(block.rows * per_item)
    if len(data) != block.rows * per_item:
        raise OSError(f"{block.source}: IDX file shorter than its header says")
    array = np.frombuffer(data, dtype=np.uint8).reshape(block.rows, *dims[1:])
    return Items(list(range(block.start, block.stop)), array=array)


def _skip(f, n: int) -> None:
    """Read past n bytes of a stream (a gzip stream can only be read forward)."""
    while n > 0:
        got = len(f.read(min(n, 1 << 24)))
        if got == 0:
            return
        n -= got


def _read_parquet(block: Block) -> Items:
    loc = locate(block.source)
    with loc.fs.open_input_file(loc.path) as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        columns = [block.column] + (["id"] if "id" in names else [])
        table = _row_range(pf, block.start, block.stop, columns)
    ids = (
        table.column("id").to_pylist()
        if "id" in columns
        else list(range(block.first_id + block.start, block.first_id + block.stop))
    )
    col = table.column(block.column).combine_chunks()
    if block.column == "image":
        values = col.to_pylist()
        errors = {
            i: RequestError("bad_image", "image", "no image bytes (null)")
            for i, v in enumerate(values)
            if v is None
        }
        return Items(ids, encoded=values, errors=errors)
    return Items(ids, array=_lists(col), errors={})


def _row_range(pf: pq.ParquetFile, start: int, stop: int, columns: list[str]) -> pa.Table:
    """Rows [start, stop) of a Parquet file, reading only the row groups they fall in."""
    groups, first, pos = [], None, 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if pos < stop and pos + n > start:
            groups.append(g)
            first = pos if first is None else first
        pos += n
    table = pf.read_row_groups(groups, columns=columns)
    return table.slice(start - (first or 0), stop - start)


def _lists(col: pa.Array) -> list[np.ndarray | None]:
    """A column of (nested) number lists -> one array per row (None for a null row)."""
    out: list[np.ndarray | None] = []
    if not pa.types.is_list(col.type) and not pa.types.is_fixed_size_list(col.type):
        return [None] * len(col)
    flat = col
    while pa.types.is_list(flat.type) or pa.types.is_fixed_size_list(flat.type):
        flat = pc.list_flatten(flat)
    if len(col) and col.null_count == 0 and not _nested(col.type):
        # one level of lists: each row's values are its slice of the flat values
        values = flat.to_numpy(zero_copy_only=False)
        offsets = _offsets(col)
        return [values[offsets[i] : offsets[i + 1]] for i in range(len(col))]
    for row in col.to_pylist():
        try:  # the values' own type: integers stay integers (0-255 pixels)
            out.append(None if row is None else np.asarray(row))
        except ValueError:  # ragged nested lists: no shape (a wrong_shape row)
            out.append(np.asarray([], dtype=np.float64).reshape(0, 0, 0))
    return out


def _nested(t: pa.DataType) -> bool:
    return pa.types.is_list(t.value_type) or pa.types.is_fixed_size_list(t.value_type)


def _offsets(col: pa.Array) -> np.ndarray:
    if pa.types.is_fixed_size_list(col.type):
        return np.arange(len(col) + 1) * col.type.list_size
    offsets = col.offsets.to_numpy()
    return offsets - offsets[0]
