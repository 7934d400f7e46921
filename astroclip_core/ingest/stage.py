"""Shared pieces of the per-partition steps: reading/writing interim tables, step results."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from astroclip_core import fsio
from astroclip_core.sources.fetch import FailureRecord, failures_table
from astroclip_core.storage import StorageLayout


def write_interim(
    layout: StorageLayout, stage: str, release: str, pixel: int, table: pa.Table
) -> int:
    """Write one stage's table for one partition atomically (replacing); return bytes written."""
    return fsio.atomic_write_parquet(layout.interim_file(stage, release, pixel), table)


def write_failures(
    layout: StorageLayout, stage: str, release: str, pixel: int, records: list[FailureRecord]
) -> str:
    """Write (replace) one stage's failures table for one partition, even when empty."""
    url = layout.failures_file(release, pixel, stage)
    fsio.atomic_write_parquet(url, failures_table(records))
    return url


def read_interim(layout: StorageLayout, stage: str, release: str, pixel: int) -> pa.Table:
    """Read one stage's table for one partition; a clear error when the stage has not run."""
    url = layout.interim_file(stage, release, pixel)
    if not fsio.exists(url):
        raise FileNotFoundError(
            f"{url} does not exist: materialize '{stage}' for {release}-{pixel} first"
        )
    fs, path = fsio.filesystem(url)
    with fs.open(path, "rb") as fh:
        return pq.read_table(fh)


@dataclass(frozen=True)
class StepResult:
    """Counts and sizes one step reports; ``extra`` holds step-specific figures."""

    path: str
    n_rows: int
    size_bytes: int
    extra: dict[str, float | int | str] = field(default_factory=dict)

    def metadata(self) -> dict[str, object]:
        """Plain metadata values (numbers and strings) for the orchestration layer."""
        return {"path": self.path, "rows": self.n_rows, "size_bytes": self.size_bytes, **self.extra}
