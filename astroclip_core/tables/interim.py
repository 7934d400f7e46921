"""The interim tables of the per-partition steps (spectra, sources, matches, cutouts) and their
failures tables: this module is their one reader and writer. Paths come from
:mod:`astroclip_core.storage`."""

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


def _read_partition(url: str, stage: str, release: str, pixel: int) -> pa.Table:
    if not fsio.exists(url):
        raise FileNotFoundError(
            f"{url} does not exist: materialize '{stage}' for {release}-{pixel} first"
        )
    return fsio.read_parquet(url)
