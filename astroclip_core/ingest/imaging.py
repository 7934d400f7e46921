"""Imaging sources of one partition: the DR9 sweep rows covering the pixel plus a margin."""

from __future__ import annotations

import logging
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from astroclip_core import fsio
from astroclip_core.formats.legacysurvey import read_sweep
from astroclip_core.results import StepResult
from astroclip_core.sky.healpix import PARTITION_NSIDE, HealpixPixel
from astroclip_core.sky.partition_match import DEFAULT_MARGIN_ARCSEC, in_pixel_with_margin
from astroclip_core.sources.fetch import FailureRecord, failures_table
from astroclip_core.sources.http import FetchError, RetryPolicy
from astroclip_core.sources.layout import DR9_NORTH_DEC_MIN_DEG
from astroclip_core.sources.legacysurvey import sweep_boxes_covering
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.interim import write_failures, write_interim

log = logging.getLogger(__name__)
STAGE = "sources"

# Sweep columns kept for matching and for the pairs table.
SOURCE_COLUMNS = [
    "RELEASE", "BRICKID", "OBJID", "TYPE", "RA", "DEC",
    "FLUX_G", "FLUX_R", "FLUX_Z", "EBV", "SHAPE_R", "MASKBITS",
]  # fmt: skip
# The sources table records the margin it was fetched with under this schema-metadata key, so
# that the cross-match can refuse a radius wider than the margin (it would lose border pairs).
MARGIN_METADATA_KEY = b"astroclip.margin_arcsec"


def record_margin(sources: pa.Table, margin_arcsec: float) -> pa.Table:
    """``sources`` with ``margin_arcsec`` recorded in its schema metadata."""
    metadata = dict(sources.schema.metadata or {})
    metadata[MARGIN_METADATA_KEY] = repr(float(margin_arcsec)).encode()
    return sources.replace_schema_metadata(metadata)


def recorded_margin_arcsec(sources: pa.Table, where: str) -> float:
    """The margin (arcsec) the sources table was fetched with; ``where`` names it in errors.

    Raises ``ValueError`` when the table records none: it was written before margins were
    recorded, or not by :func:`fetch_partition_sources`, and must be fetched again.
    """
    value = (sources.schema.metadata or {}).get(MARGIN_METADATA_KEY)
    if value is None:
        raise ValueError(
            f"{where} records no {MARGIN_METADATA_KEY.decode()} in its schema metadata, so the "
            "margin its sources were fetched with is unknown; materialize imaging_sources for "
            "this partition again"
        )
    return float(value)


def sweeps_for_pixel(pixel: int, margin_arcsec: float) -> list[tuple[str, int, int]]:
    """(region, ra_min, dec_min) of each sweep box covering the pixel plus the margin.

    DR9's ls-dr9 layer uses north imaging at Dec >= 32.375 and south below, so only the
    region(s) whose side of that line the box touches are listed.
    """
    boxes: set[tuple[str, int, int]] = set()
    pix = HealpixPixel(PARTITION_NSIDE, pixel)
    for ra0, ra1, dec0, dec1 in pix.bounding_boxes_deg(margin_arcsec):
        reaches = {"south": dec0 < DR9_NORTH_DEC_MIN_DEG, "north": dec1 >= DR9_NORTH_DEC_MIN_DEG}
        for box in sweep_boxes_covering(ra0, ra1, dec0, dec1):
            if reaches[box.region]:  # a box on the join is listed for both regions
                boxes.add((box.region, box.ra_min_deg, box.dec_min_deg))
    return sorted(boxes)


def _region_rows(table: pa.Table, region: str) -> pa.Table:
    # Keep each region's sources only on its own side of the north/south line (no duplicates).
    dec = table.column("dec")
    north = pc.greater_equal(dec, DR9_NORTH_DEC_MIN_DEG)
    return table.filter(north if region == "north" else pc.invert(north))


def fetch_partition_sources(
    source,
    layout: StorageLayout,
    release: str,
    pixel: int,
    margin_arcsec: float = DEFAULT_MARGIN_ARCSEC,
    policy: RetryPolicy | None = None,
) -> StepResult:
    """Fetch the sweeps covering ``pixel`` + margin and write the sources inside it.

    ``source`` is a :class:`astroclip_core.sources.legacysurvey.LegacySurveySource`. A sweep
    box the survey does not cover (HTTP 404) contributes no sources. The table records
    ``margin_arcsec`` in its schema metadata (:func:`record_margin`).
    """
    if not (margin_arcsec >= 0 and math.isfinite(margin_arcsec)):
        raise ValueError(f"margin_arcsec {margin_arcsec} must be finite and >= 0")
    tables = []
    boxes = sweeps_for_pixel(pixel, margin_arcsec)
    n_files = 0
    failures: list[FailureRecord] = []
    for region, ra_min, dec_min in boxes:
        try:
            cached = source.fetch_sweep(layout, region, ra_min, dec_min, policy=policy)
        except FetchError as err:
            # Recorded, not fatal; sources in that box are missing from this partition.
            failures.append(
                FailureRecord(
                    "sweep", f"{region}-{ra_min}-{dec_min}", err.url, err.problem, err.attempts
                )
            )
            log.warning("sources %s-%d: sweep %s failed: %s", release, pixel, err.url, err.problem)
            continue
        if cached is None:
            log.info(
                "sources %s-%d: no sweep %s %d %d (not covered)",
                release,
                pixel,
                region,
                ra_min,
                dec_min,
            )
            continue
        n_files += 1
        with fsio.local_copy(cached) as path:
            table = read_sweep(path, columns=SOURCE_COLUMNS)
        table = _region_rows(table, region)
        keep = in_pixel_with_margin(
            table.column("ra").to_numpy(),
            table.column("dec").to_numpy(),
            HealpixPixel(PARTITION_NSIDE, pixel),
            margin_arcsec,
        )
        tables.append(table.filter(pa.array(keep)))
    if tables:
        sources = pa.concat_tables(tables)
    else:
        raise FileNotFoundError(
            f"no sweep file covers partition {release}-{pixel} ({len(boxes)} boxes tried)"
        )
    sources = sources.append_column(
        "region",
        pa.array(np.where(sources.column("dec").to_numpy() >= DR9_NORTH_DEC_MIN_DEG, "N", "S")),
    )
    sources = record_margin(sources, margin_arcsec)
    size = write_interim(layout, STAGE, release, pixel, sources)
    write_failures(layout, STAGE, release, pixel, failures_table(failures))
    log.info(
        "sources %s-%d: %d sources from %d sweep files", release, pixel, sources.num_rows, n_files
    )
    return StepResult(
        {"path": layout.interim_file(release, pixel, STAGE)},
        sources.num_rows,
        size,
        {
            "sweep_files": n_files,
            "sweep_files_failed": len(failures),
            "margin_arcsec": margin_arcsec,
        },
    )
