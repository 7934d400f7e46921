"""The interim tables of the per-partition steps (spectra, sources, matches, cutouts) and their
failures tables: this module is their one reader, writer and remover. Paths come from
:mod:`astroclip_core.storage`.

A table's *version* (:func:`interim_version`) names one written file: every write is a new
file renamed into place (or one PUT), so a re-run of the step gives a new version. The pairs
step notes the versions it read and :func:`remove_interim` deletes a table only while it is
still that version, never a newer one that a concurrent run of the step has just written."""

from __future__ import annotations

import pyarrow as pa

from astroclip_core import fsio
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.schemas import FAILURES_SCHEMA


def write_interim(
    layout: StorageLayout, stage: str, release: str, pixel: int, table: pa.Table
) -> int:
    """Write one stage's table for one partition atomically (replacing); return bytes written."""
    return fsio.atomic_write_parquet(layout.interim_file(release, pixel, stage), table)


def write_failures(
    layout: StorageLayout, stage: str, release: str, pixel: int, failures: pa.Table
) -> str:
    """Write (replace) one stage's failures table for one partition, even when empty.

    ``failures`` has :data:`~astroclip_core.tables.schemas.FAILURES_SCHEMA` (built from fetch
    records by :func:`astroclip_core.sources.fetch.failures_table`); another schema raises.
    """
    if not failures.schema.equals(FAILURES_SCHEMA):
        raise ValueError(
            f"failures table for {release}-{pixel} ({stage}) has schema {failures.schema}"
        )
    url = layout.failures_file(release, pixel, stage)
    fsio.atomic_write_parquet(url, failures)
    return url


def read_failures(layout: StorageLayout, stage: str, release: str, pixel: int) -> pa.Table:
    """Read one stage's failures table for one partition (rows of ``failures_table``)."""
    return _read_partition(layout.failures_file(release, pixel, stage), stage, release, pixel)


def read_interim(layout: StorageLayout, stage: str, release: str, pixel: int) -> pa.Table:
    """Read one stage's table for one partition; a clear error when the stage has not run."""
    return _read_partition(layout.interim_file(release, pixel, stage), stage, release, pixel)


def interim_version(layout: StorageLayout, stage: str, release: str, pixel: int) -> str | None:
    """A key of the file now holding one stage's table of one partition; None when there is none.

    fsspec's ``ukey``: a hash of the file's info (local: inode, size and mtime; S3: its ETag).
    """
    fs, path = fsio.filesystem(layout.interim_file(release, pixel, stage))
    try:
        return str(fs.ukey(path))
    except FileNotFoundError:
        return None


def remove_interim(
    layout: StorageLayout, stage: str, release: str, pixel: int, version: str
) -> int:
    """Delete one stage's table of one partition if it is still ``version``; return bytes freed.

    Returns 0 (and deletes nothing) when the table is gone or has been rewritten since
    ``version`` was taken. The partition folder stays, even empty: a step writing the table
    again at that moment creates its temporary file there (removing it could fail that write).
    """
    url = layout.interim_file(release, pixel, stage)
    fs, path = fsio.filesystem(url)
    try:
        if str(fs.ukey(path)) != version:
            return 0
        size = int(fs.size(path))
        fs.rm_file(path)
    except FileNotFoundError:
        return 0
    return size


def _read_partition(url: str, stage: str, release: str, pixel: int) -> pa.Table:
    if not fsio.exists(url):
        raise FileNotFoundError(
            f"{url} does not exist: materialize '{stage}' for {release}-{pixel} first"
        )
    return fsio.read_parquet(url)
