"""The release catalogue: fetch the redshift catalogue, select clean galaxies, assign partitions."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from astroclip_core import fsio
from astroclip_core.formats.desi import GalaxySelection, SelectionReport, read_zcatalog
from astroclip_core.results import SmallTable, StepResult
from astroclip_core.sky.healpix import PARTITION_NSIDE, HealpixPixel, partition_key, pixels_of
from astroclip_core.sources.desi import DesiSource
from astroclip_core.sources.http import RetryPolicy
from astroclip_core.storage import StorageLayout

# Only these columns are read from the (2 GB for real EDR) catalogue.
CATALOG_COLUMNS = [
    "TARGETID", "SURVEY", "PROGRAM", "HEALPIX", "TARGET_RA", "TARGET_DEC", "Z", "ZERR",
    "RELEASE", "BRICKID", "BRICK_OBJID", "MORPHTYPE", "FLUX_G", "FLUX_R", "FLUX_Z", "EBV",
]  # fmt: skip


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
    source: DesiSource,
    layout: StorageLayout,
    selection: GalaxySelection,
    policy: RetryPolicy | None = None,
) -> StepResult:
    """Fetch ``source``'s zcatalog into the cache, select, and write ``catalog/<release>/``.

    The result's ``partition_keys`` name one partition per nside-16 pixel holding selected
    galaxies.
    """
    release = source.release.name
    cached = source.fetch_zcatalog(layout, policy=policy)
    with fsio.local_copy(cached) as path:
        table, report = select_catalog(str(path), selection)
    table = table.take(
        pc.sort_indices(table, [("partition", "ascending"), ("targetid", "ascending")])
    )
    out = layout.catalog_file(release)
    size = fsio.atomic_write_parquet(out, table)
    fsio.atomic_write_bytes(
        layout.catalog_report(release),
        json.dumps(
            {
                "n_input": report.n_input,
                "cuts": report.cuts,
                "n_selected": report.n_selected,
                "selection": asdict(selection),
            },
            indent=2,
        ).encode(),
    )
    pix, counts = np.unique(table.column("partition").to_numpy(), return_counts=True)
    keys = tuple(partition_key(release, int(p)) for p in pix)
    return StepResult(
        outputs={"path": out},
        rows=table.num_rows,
        size_bytes=size,
        metadata={
            "n_input": report.n_input,
            "n_selected": table.num_rows,
            "selection_cuts": SmallTable(("cut", "rows removed"), tuple(report.cuts)),
            "galaxies_per_partition": SmallTable(
                ("partition", "galaxies"),
                tuple((k, int(c)) for k, c in zip(keys, counts, strict=True)),
            ),
        },
        partition_keys=keys,
    )


def partition_targets(layout: StorageLayout, release: str, pixel: int) -> pa.Table:
    """The selected catalogue rows of one nside-16 pixel (sorted by targetid)."""
    return fsio.read_parquet(layout.catalog_file(release), filters=[("partition", "=", int(pixel))])


def neighbour_targets(
    layout: StorageLayout, release: str, pixel: int, columns: list[str] | None = None
) -> pa.Table:
    """The selected catalogue rows of the (up to 8) nside-16 pixels adjacent to ``pixel``.

    Every spectrum within a match radius of the pixel's border lies in one of them, so these
    are the spectra that can compete with the pixel's own for a source in its margin.
    """
    adjacent = [n.pixel for n in HealpixPixel(PARTITION_NSIDE, int(pixel)).neighbours()]
    return fsio.read_parquet(
        layout.catalog_file(release), columns=columns, filters=[("partition", "in", adjacent)]
    )
