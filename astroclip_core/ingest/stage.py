"""Shared pieces of the per-partition steps: the one reader and writer of the interim and
failures tables."""

from __future__ import annotations

import pyarrow as pa

from astroclip_core import fsio
from astroclip_core.sources.fetch import FailureRecord, failures_table
from astroclip_core.storage import StorageLayout


def write_interim(
    layout: StorageLayout, stage: str, release: str, pixel: int, table: pa.Table
) -> int:
    """Write one stage's table for one partition atomically (replacing); return bytes written."""
    return fsio.atomic_write_parquet(layout.interim_file(release, pixel, stage), table)


def write_failures(
    layout: StorageLayout, stage: str, release: str, pixel: int, records: list[FailureRecord]
) -> str:
    """Write (replace) one stage's failures table for one partition, even when empty."""
    url = layout.failures_file(release, pixel, stage)
    fsio.atomic_write_parquet(url, failures_table(records))
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
