"""The release catalogue: fetch the redshift catalogue, select clean galaxies, assign partitions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from astroclip_core import fsio
from astroclip_core.formats.desi import GalaxySelection, SelectionReport, read_zcatalog
from astroclip_core.sky.healpix import PARTITION_NSIDE, pixels_of
from astroclip_core.sources.http import RetryPolicy
from astroclip_core.storage import StorageLayout

# Only these columns are read from the (2 GB for real EDR) catalogue.
CATALOG_COLUMNS = [
    "TARGETID", "SURVEY", "PROGRAM", "HEALPIX", "TARGET_RA", "TARGET_DEC", "Z", "ZERR",
    "RELEASE", "BRICKID", "BRICK_OBJID", "MORPHTYPE", "FLUX_G", "FLUX_R", "FLUX_Z", "EBV",
]  # fmt: skip


@dataclass(frozen=True)
class CatalogResult:
    """The selected catalogue of one release and where it went."""

    path: str
    report: SelectionReport
    n_selected: int
    pixels: list[int]
    counts_per_pixel: dict[int, int] = field(default_factory=dict)


def select_catalog(
    zcatalog_path: str, selection: GalaxySelection
) -> tuple[pa.Table, SelectionReport]:
    """Read and select a local zcatalog file; add the nside-16 ``partition`` pixel column."""
    table, report = read_zcatalog(zcatalog_path, columns=CATALOG_COLUMNS, selection=selection)
    ra = table.column("target_ra").to_numpy()
    dec = table.column("target_dec").to_numpy()
    part = pixels_of(ra, dec, PARTITION_NSIDE).astype(np.int32)
    return table.append_column("partition", pa.array(part, pa.int32())), report


def build_release_catalog(
    source, layout: StorageLayout, selection: dict, policy: RetryPolicy | None = None
) -> CatalogResult:
    """Fetch ``source``'s zcatalog into the cache, select, and write ``catalog/<release>/``.

    ``source`` is a :class:`astroclip_core.sources.desi.DesiSource`; ``selection`` the keyword
    arguments of :class:`GalaxySelection`.
    """
    release = source.release.name
    cached = source.fetch_zcatalog(layout, policy=policy)
    with fsio.local_copy(cached) as path:
        table, report = select_catalog(str(path), GalaxySelection(**selection))
    table = table.take(
        pc.sort_indices(table, [("partition", "ascending"), ("targetid", "ascending")])
    )
    out = layout.catalog_file(release)
    fsio.atomic_write_parquet(out, table)
    fsio.atomic_write_bytes(
        layout.catalog_report(release),
        json.dumps(
            {
                "n_input": report.n_input,
                "cuts": report.cuts,
                "n_selected": report.n_selected,
                "selection": selection,
            },
            indent=2,
        ).encode(),
    )
    pix, counts = np.unique(table.column("partition").to_numpy(), return_counts=True)
    return CatalogResult(
        path=out,
        report=report,
        n_selected=table.num_rows,
        pixels=[int(p) for p in pix],
        counts_per_pixel={int(p): int(c) for p, c in zip(pix, counts, strict=True)},
    )


def partition_targets(layout: StorageLayout, release: str, pixel: int) -> pa.Table:
    """The selected catalogue rows of one nside-16 pixel (sorted by targetid)."""
    fs, path = fsio.filesystem(layout.catalog_file(release))
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as fh:
        table = pq.read_table(fh, filters=[("partition", "=", int(pixel))])
    return table
