"""Cross-match of one partition: each selected spectrum to its nearest imaging source."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from astroclip_core.ingest.catalog import partition_targets
from astroclip_core.ingest.stage import read_interim, write_interim
from astroclip_core.sky.healpix import PARTITION_NSIDE, HealpixPixel
from astroclip_core.sky.partition_match import (
    SourceIds,
    SourcePositions,
    SpectraPositions,
    id_agreement,
    match_partition,
)
from astroclip_core.storage import StorageLayout

log = logging.getLogger(__name__)
STAGE = "matches"


@dataclass(frozen=True)
class MatchStageResult:
    """Match statistics of one partition."""

    path: str
    n_spectra: int
    n_sources: int
    n_matched: int
    n_conflicts_resolved: int
    radius_arcsec: float
    sep_arcsec: np.ndarray  # (n_matched,) separations of the kept pairs
    id_pairs_with_ids: int
    id_agreement_rate: float | None

    def metadata(self) -> dict[str, object]:
        """Plain metadata values for the orchestration layer."""
        sep = self.sep_arcsec
        return {
            "path": self.path,
            "spectra": self.n_spectra,
            "imaging_sources": self.n_sources,
            "matched": self.n_matched,
            "unmatched": self.n_spectra - self.n_matched,
            "match_fraction": round(self.n_matched / self.n_spectra, 4) if self.n_spectra else 0.0,
            "conflicts_resolved": self.n_conflicts_resolved,
            "radius_arcsec": self.radius_arcsec,
            "sep_median_arcsec": float(np.median(sep)) if len(sep) else float("nan"),
            "sep_p95_arcsec": float(np.percentile(sep, 95)) if len(sep) else float("nan"),
            "pairs_with_ids_both_sides": self.id_pairs_with_ids,
            "position_id_agreement_rate": self.id_agreement_rate
            if self.id_agreement_rate is not None
            else float("nan"),
        }

    def histogram_png(self) -> bytes:
        """A PNG histogram of the kept separations (arcsec)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        ax.hist(self.sep_arcsec, bins=40, range=(0, self.radius_arcsec), color="tab:blue")
        ax.set_xlabel("separation [arcsec]")
        ax.set_ylabel("pairs")
        ax.set_title(f"{self.n_matched}/{self.n_spectra} spectra matched")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        return buf.getvalue()


def match_partition_stage(
    layout: StorageLayout, release: str, pixel: int, radius_arcsec: float
) -> MatchStageResult:
    """Match the partition's selected spectra to its imaging sources (with margin), one to one.

    Writes ``interim/matches`` with targetid, the source's ra/dec and catalogue columns, and
    the separation.
    """
    targets = partition_targets(layout, release, pixel)
    sources = read_interim(layout, "sources", release, pixel)

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
    match = match_partition(spectra, imaging, HealpixPixel(PARTITION_NSIDE, pixel), radius_arcsec)
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
    })  # fmt: skip
    write_interim(layout, STAGE, release, pixel, table)
    log.info(
        "matches %s-%d: %d/%d spectra matched within %.2f arcsec",
        release,
        pixel,
        match.n_matched,
        match.n_spectra,
        radius_arcsec,
    )
    return MatchStageResult(
        path=layout.interim_file(STAGE, release, pixel),
        n_spectra=match.n_spectra,
        n_sources=sources.num_rows,
        n_matched=match.n_matched,
        n_conflicts_resolved=match.n_conflicts_resolved,
        radius_arcsec=radius_arcsec,
        sep_arcsec=np.asarray(match.sep_arcsec, dtype=np.float64),
        id_pairs_with_ids=agreement.n_both_have_ids,
        id_agreement_rate=agreement.rate,
    )
