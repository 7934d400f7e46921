"""Cross-match of one partition: each selected spectrum to its nearest imaging source."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from astroclip_core.ingest.catalog import neighbour_targets, partition_targets
from astroclip_core.ingest.imaging import recorded_margin_arcsec
from astroclip_core.results import Figure, MetadataEntry, StepResult
from astroclip_core.sky.healpix import PARTITION_NSIDE, HealpixPixel
from astroclip_core.sky.partition_match import (
    DEFAULT_RADIUS_ARCSEC,
    BorderRivals,
    IdAgreement,
    PartitionMatch,
    SourceIds,
    SourcePositions,
    SpectraPositions,
    id_agreement,
    match_partition,
    require_margin_covers_radius,
)
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.interim import read_interim, write_interim
from astroclip_core.tables.schemas import MATCHES_SCHEMA

log = logging.getLogger(__name__)
STAGE = "matches"


def separation_histogram_png(sep_arcsec: np.ndarray, radius_arcsec: float, title: str) -> bytes:
    """A PNG histogram of the kept separations (arcsec) from 0 to the match radius."""
    from matplotlib.figure import Figure as MplFigure

    from astroclip_core.plots import render_png

    fig = MplFigure(figsize=(5, 3), layout="tight")
    ax = fig.subplots()
    ax.hist(sep_arcsec, bins=40, range=(0, radius_arcsec), color="tab:blue")
    ax.set_xlabel("separation [arcsec]")
    ax.set_ylabel("pairs")
    ax.set_title(title)
    return render_png(fig, dpi=80)


def match_partition_stage(
    layout: StorageLayout, release: str, pixel: int, radius_arcsec: float = DEFAULT_RADIUS_ARCSEC
) -> StepResult:
    """Match the partition's selected spectra to its imaging sources (with margin), one to one.

    Refuses (``ValueError`` naming both) a radius wider than the margin the sources table
    records, and a sources table that records none. A margin source that a spectrum of a
    neighbouring pixel (read from the release catalogue) is nearer to is left to that pixel,
    so each source is used once in the release (:mod:`astroclip_core.sky.partition_match`).

    Writes ``interim/matches`` (:data:`~astroclip_core.tables.schemas.MATCHES_SCHEMA`): targetid,
    the source's ra/dec and catalogue columns, and the separation.
    """
    sources = read_interim(layout, "sources", release, pixel)
    where = layout.interim_file(release, pixel, "sources")
    require_margin_covers_radius(radius_arcsec, recorded_margin_arcsec(sources, where))
    targets = partition_targets(layout, release, pixel)

    def col(table: pa.Table, name: str) -> np.ndarray:
        return table.column(name).to_numpy()

    spectra = SpectraPositions(
        col(targets, "target_ra"), col(targets, "target_dec"),
        SourceIds(col(targets, "release"), col(targets, "brickid"), col(targets, "brick_objid")),
    )  # fmt: skip
    imaging = SourcePositions(
        col(sources, "ra"), col(sources, "dec"),
        SourceIds(col(sources, "release"), col(sources, "brickid"), col(sources, "objid")),
    )  # fmt: skip
    others = neighbour_targets(layout, release, pixel, ["targetid", "target_ra", "target_dec"])
    rivals = BorderRivals(
        col(targets, "targetid"),
        SpectraPositions(col(others, "target_ra"), col(others, "target_dec")),
        col(others, "targetid"),
    )
    match = match_partition(
        spectra, imaging, HealpixPixel(PARTITION_NSIDE, pixel), radius_arcsec, rivals
    )
    agreement = id_agreement(match, spectra, imaging)
    src = sources.take(pa.array(match.source_idx))
    table = pa.table({
        "targetid": targets.column("targetid").take(pa.array(match.spectrum_idx)),
        "ra": src.column("ra"),
        "dec": src.column("dec"),
        "sep_arcsec": pa.array(match.sep_arcsec.astype(np.float32)),
        "ls_release": src.column("release").cast(pa.int16()),
        "brickid": src.column("brickid").cast(pa.int32()),
        "objid": src.column("objid").cast(pa.int32()),
        "flux_g": src.column("flux_g"),
        "flux_r": src.column("flux_r"),
        "flux_z": src.column("flux_z"),
        "ebv": src.column("ebv"),
        "morphtype": src.column("type"),
    }, schema=MATCHES_SCHEMA)  # fmt: skip
    size = write_interim(layout, STAGE, release, pixel, table)
    log.info(
        "matches %s-%d: %d/%d spectra matched within %.2f arcsec",
        release,
        pixel,
        match.n_matched,
        match.n_spectra,
        radius_arcsec,
    )
    return StepResult(
        outputs={"path": layout.interim_file(release, pixel, STAGE)},
        rows=table.num_rows,
        size_bytes=size,
        metadata=_match_metadata(match, agreement, sources.num_rows),
    )


def _match_metadata(
    match: PartitionMatch, agreement: IdAgreement, n_sources: int
) -> dict[str, MetadataEntry]:
    sep = np.asarray(match.sep_arcsec, dtype=np.float64)  # (n_matched,)
    n_spectra, n_matched = match.n_spectra, match.n_matched
    title = f"{n_matched}/{n_spectra} spectra matched"
    return {
        "spectra": n_spectra,
        "imaging_sources": n_sources,
        "matched": n_matched,
        "unmatched": n_spectra - n_matched,
        "match_fraction": round(n_matched / n_spectra, 4) if n_spectra else 0.0,
        "conflicts_resolved": match.n_conflicts_resolved,
        "border_sources_contested": match.n_border_contested,
        "border_sources_ceded": match.n_border_ceded,
        "border_spectra_lost_nearest": match.n_border_losers,
        "radius_arcsec": match.radius_arcsec,
        "sep_median_arcsec": float(np.median(sep)) if len(sep) else float("nan"),
        "sep_p95_arcsec": float(np.percentile(sep, 95)) if len(sep) else float("nan"),
        "pairs_with_ids_both_sides": agreement.n_both_have_ids,
        "position_id_agreement_rate": float("nan") if agreement.rate is None else agreement.rate,
        "separation_histogram": Figure(
            separation_histogram_png(sep, match.radius_arcsec, title), "separations"
        ),
    }
