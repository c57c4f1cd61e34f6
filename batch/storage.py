"""Paths as filesystems: a local path or any URI pyarrow accepts (`s3://`, `gs://`, ...).

Every read and write of a batch job goes through pyarrow's filesystems, so the
same code reads a local folder in the tests and a bucket on a cluster. Writes
that must be all-or-nothing (`write_atomic`) go to a temporary name and are
renamed: a rename is atomic on a local or POSIX filesystem; on an object store
the object appears whole when its upload completes.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pyarrow.fs as pafs

TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class Location:
    fs: pafs.FileSystem
    path: str  # the filesystem's own path (no scheme)
    uri: str  # as the user gave it (made absolute when local)

    def join(self, *parts: str) -> Location:
        path = "/".join([self.path.rstrip("/"), *parts])
        return Location(self.fs, path, "/".join([self.uri.rstrip("/"), *parts]))

    def info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]


def locate(where: str) -> Location:
    """A local path (relative ones are made absolute) or a filesystem URI."""
    if "://" not in where:
        path = os.path.abspath(os.path.expanduser(where))
        return Location(pafs.LocalFileSystem(), path, path)
    fs, path = pafs.FileSystem.from_uri(where)
    return Location(fs, path, where)


def write_atomic(loc: Location, data: bytes) -> None:
    """`data` at `loc`, all or nothing: written under a temporary name in the same
    folder, then renamed over `loc`."""
    folder, name = loc.path.rstrip("/").rsplit("/", 1)
    tmp = f"{folder}/{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}"
    with loc.fs.open_output_stream(tmp) as f:
        f.write(data)
    loc.fs.move(tmp, loc.path)


def listing(loc: Location) -> list[pafs.FileInfo]:
    """Every file under a folder, recursively."""
    selector = pafs.FileSelector(loc.path, recursive=True)
    return [i for i in loc.fs.get_file_info(selector) if i.type == pafs.FileType.File]
