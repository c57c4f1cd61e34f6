"""Reading a block's items, on an actor (the driver plans blocks: `batch.sources`).

`read_block` returns the block's items as read: the encoded files of a folder
or a Parquet `image` column, or an array (IDX, `.npy`, Parquet `pixels` or
latents); what cannot be read of one item (a file over the size limit, an
unreadable file, a null) is that item's `RequestError`, never the block's.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch.sources import FOLDER, IDX, NPY, Block, idx_header, npy_header
from batch.storage import locate
from handlers.errors import RequestError


@dataclass
class Items:
    """A block's items as read: encoded images, or an array; ids; per-item read errors."""

    ids: list
    encoded: list[bytes | None] | None = None  # FOLDER, Parquet `image`
    array: np.ndarray | None = None  # IDX, .npy, Parquet `pixels` / `z` (bad rows: zeros)
    errors: dict[int, RequestError] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


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
    shape, dtype, offset = npy_header(loc)
    per_item = int(np.prod(shape[1:])) * dtype.itemsize
    with loc.fs.open_input_file(loc.path) as f:
        f.seek(offset + block.start * per_item)
        data = f.read(block.rows * per_item)
    array = np.frombuffer(data, dtype=dtype).reshape(block.rows, *shape[1:])
    return Items(list(range(block.start, block.stop)), array=array)


def _read_idx(block: Block) -> Items:
    loc = locate(block.source)
    dims, offset = idx_header(loc)
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
