"""fsspec helpers: open any data-root URL, and write files atomically.

Local paths are written to a temporary name in the same folder and renamed, so a crash never
leaves a half-written file. Object stores (s3://...) make a PUT visible only once it is
complete, so a single put is already atomic there.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path-within-it) for a local path or fsspec URL."""
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def is_local(url: str) -> bool:
    """True for plain paths and file:// URLs."""
    return "://" not in url or url.startswith("file://")


def _local_path(url: str) -> Path:
    return Path(url[len("file://") :] if url.startswith("file://") else url)


def atomic_write_bytes(url: str, data: bytes) -> None:
    """Write ``data`` to ``url`` so that readers see either the old file or the whole new one."""
    if is_local(url):
        path = _local_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; published files are world-readable
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return
    fs, path = filesystem(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


def atomic_write_parquet(url: str, table: pa.Table, **kwargs: object) -> int:
    """Write ``table`` as one Parquet file at ``url`` atomically; return its size in bytes."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **kwargs)
    data = sink.getvalue().to_pybytes()
    atomic_write_bytes(url, data)
    return len(data)


def read_bytes(url: str) -> bytes:
    """Read a whole file from a local path or fsspec URL."""
    fs, path = filesystem(url)
    return fs.cat_file(path)


def exists(url: str) -> bool:
    """True when ``url`` names an existing file or folder."""
    fs, path = filesystem(url)
    return fs.exists(path)


@contextmanager
def local_copy(url: str) -> Iterator[Path]:
    """Yield a local path holding ``url``'s bytes: the file itself when local, else a temp copy.

    fitsio needs a real file; remote (s3://) cache entries are copied to a temporary file that
    is removed on exit.
    """
    if is_local(url):
        yield _local_path(url)
        return
    fs, path = filesystem(url)
    suffix = Path(path).suffix
    with tempfile.TemporaryDirectory(prefix="astroclip-") as tmp:
        local = Path(tmp) / f"copy{suffix}"
        fs.get_file(path, str(local))
        yield local
