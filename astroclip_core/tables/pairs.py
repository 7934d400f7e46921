"""Reading and writing the pairs table: one Parquet file per release and nside-16 pixel.

Paths come from :mod:`astroclip_core.storage`; the schema from :mod:`astroclip_core.tables.schemas`.
A write replaces the partition's file atomically and never appends.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from astroclip_core import fsio
from astroclip_core.formats import FormatError
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.schemas import PAIRS_SCHEMA

# Row groups of ~256 pairs (~80 MB) keep reads streaming without huge pages.
PAIRS_ROW_GROUP_SIZE = 256


@dataclass(frozen=True)
class PairsWrite:
    """What one partition write produced."""

    path: str
    n_rows: int
    size_bytes: int


def conform_pairs(table: pa.Table) -> pa.Table:
    """Select and cast ``table``'s columns to :data:`PAIRS_SCHEMA` (raises on missing columns)."""
    missing = [f.name for f in PAIRS_SCHEMA if f.name not in table.column_names]
    if missing:
        raise ValueError(f"pairs table lacks columns {missing}")
    return table.select(PAIRS_SCHEMA.names).cast(PAIRS_SCHEMA)


def write_pairs(layout: StorageLayout, release: str, pixel: int, table: pa.Table) -> PairsWrite:
    """Write one partition's pairs, replacing any previous file; rows sorted by targetid."""
    table = conform_pairs(table)
    if table.num_rows:
        table = table.take(pa.compute.sort_indices(table, [("targetid", "ascending")]))
    url = layout.pairs_file(release, pixel)
    size = fsio.atomic_write_parquet(
        url, table, row_group_size=PAIRS_ROW_GROUP_SIZE, compression="zstd", compression_level=1
    )
    return PairsWrite(url, table.num_rows, size)


def list_pairs_files(pairs_dir: str) -> list[tuple[int, str]]:
    """``(pixel, url)`` of every ``healpix=<pix>/part-0.parquet`` under ``pairs_dir``, by pixel."""
    fs, root = fsio.filesystem(pairs_dir)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    found = []
    for path in fs.glob(f"{root.rstrip('/')}/healpix=*/part-0.parquet"):
        folder = path.rstrip("/").split("/")[-2]
        try:
            pixel = int(folder.removeprefix("healpix="))
        except ValueError:
            raise FormatError(path, f"partition folder {folder!r} is not healpix=<int>") from None
        url = path if fsio.is_local(pairs_dir) else f"{protocol}://{path.lstrip('/')}"
        found.append((pixel, url))
    return sorted(found)


def read_pairs(url: str, columns: list[str] | None = None) -> pa.Table:
    """Read one pairs Parquet file (local path or fsspec URL)."""
    fs, path = fsio.filesystem(url)
    with fs.open(path, "rb") as fh:
        return pq.read_table(fh, columns=columns)
