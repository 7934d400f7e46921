"""Cutouts of the sample sky, cut on request from its DR9 coadd bricks.

Contract (the same as the real cutout service's, for the parameters the project uses): a
(nbands, size, size) float32 stamp in nanomaggies, TAN projection centred on (ra, dec), bands
in the requested order. As the real viewer does, the stamp is a Lanczos-3 resampling of the
brick pixels (:func:`astroclip_core.sky.bricks.stamp_from_bricks`); the service computes only
the brick windows a stamp needs (:mod:`astroclip_core.samplesky.bricks`), and those equal the
same slices of the brick files it serves, so a client that cuts stamps from downloaded bricks
gets the same bytes. Sky outside the footprint is zero (away from its edge, where the kernel
reaches in, exactly zero); sources are drawn with the PSF of the brick they are in, plus
noise seeded per brick tile, so the noise does not depend on which sources are there.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from astroclip_core.formats.legacysurvey import SWEEP_COLUMNS, read_sweep
from astroclip_core.fsio import read_parquet
from astroclip_core.samplesky.bricks import BrickSky
from astroclip_core.samplesky.catalogs import catalogue_flux_noise
from astroclip_core.samplesky.generate import bulges_path, legacysurvey_root, read_manifest
from astroclip_core.samplesky.ids import source_key
from astroclip_core.samplesky.sky import STRUCTURE_FIELDS
from astroclip_core.sky.bricks import plan_stamp, stamp_from_bricks
from astroclip_core.sky.tan import tan_pixel_to_sky

BAND_INDEX = {"g": 0, "r": 1, "z": 2}
MAX_SIZE_PIX = 512
LAYER = "ls-dr9"


@dataclass(frozen=True)
class CutoutRequest:
    """A validated cutout query."""

    ra_deg: float
    dec_deg: float
    layer: str = LAYER
    pixscale_arcsec: float = 0.262
    bands: str = "grz"
    size_pix: int = 152

    def __post_init__(self) -> None:
        if not (np.isfinite(self.ra_deg) and 0.0 <= self.ra_deg < 360.0):
            raise ValueError(f"ra={self.ra_deg} must be in [0, 360)")
        if not (np.isfinite(self.dec_deg) and -90.0 <= self.dec_deg <= 90.0):
            raise ValueError(f"dec={self.dec_deg} must be in [-90, 90]")
        if self.layer != LAYER:
            raise ValueError(f"layer={self.layer!r} is not served; only {LAYER!r}")
        if not (np.isfinite(self.pixscale_arcsec) and self.pixscale_arcsec > 0):
            raise ValueError(f"pixscale={self.pixscale_arcsec} must be > 0")
        if (
            not self.bands
            or set(self.bands) - set(BAND_INDEX)
            or len(set(self.bands)) != len(self.bands)
        ):
            raise ValueError(f"bands={self.bands!r} must be distinct letters from 'grz'")
        if not 1 <= self.size_pix <= MAX_SIZE_PIX:
            raise ValueError(f"size={self.size_pix} must be in 1..{MAX_SIZE_PIX}")

    def key(self) -> str:
        """Canonical text of the query (seeds the noise)."""
        return (
            f"ra={self.ra_deg:.7f}&dec={self.dec_deg:.7f}&layer={self.layer}"
            f"&pixscale={self.pixscale_arcsec:g}&bands={self.bands}&size={self.size_pix}"
        )


def pixel_to_sky(
    x: np.ndarray, y: np.ndarray, ra0_deg: float, dec0_deg: float, pixscale_arcsec: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees of FITS pixel coordinates in a TAN stamp (inverse of sky_to_pixel)."""
    crpix = (size + 1) / 2.0
    return tan_pixel_to_sky(x, y, ra0_deg, dec0_deg, crpix, crpix, pixscale_arcsec)


def _unit(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


class CutoutRenderer:
    """Renders cutouts of the sample sky under ``root`` (sweeps loaded once, thread-safe)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        cfg = read_manifest(self.root)
        self.seed = cfg.seed
        self.footprint = np.array(cfg.union_pixels())
        self._lock = threading.Lock()
        self._catalog: dict[str, np.ndarray] | None = None
        self._tree: cKDTree | None = None
        self._measured_fluxes = True  # set by _load from the sky's files

    def _load(self) -> tuple[dict[str, np.ndarray], cKDTree]:
        with self._lock:
            if self._catalog is None:
                paths = sorted(legacysurvey_root(self.root).glob("*/sweep/9.0/sweep-*.fits"))
                if not paths:
                    raise FileNotFoundError(f"{legacysurvey_root(self.root)}: no sweep files")
                tables = [read_sweep(p) for p in paths]
                self._catalog = {
                    name.lower(): np.concatenate(
                        [t[name.lower()].to_numpy(zero_copy_only=False) for t in tables]
                    )
                    for name in SWEEP_COLUMNS
                }
                self._catalog.update(_bulges_for(self.root, self._catalog))
                self._measured_fluxes = bulges_path(self.root).exists()
                self._tree = cKDTree(_unit(self._catalog["ra"], self._catalog["dec"]))
            assert self._tree is not None
            return self._catalog, self._tree

    def catalog(self) -> dict[str, np.ndarray]:
        """The sweep sources (lower-case columns, plus ``bulge_flux``, ``bulge_r``), loaded once."""
        return self._load()[0]

    def sources_near(self, ra_deg: float, dec_deg: float, radius_arcsec: float) -> np.ndarray:
        """Indices of sweep sources within ``radius_arcsec`` of a position."""
        _, tree = self._load()
        chord = 2 * np.sin(np.radians(radius_arcsec / 3600.0) / 2)
        return np.array(
            sorted(tree.query_ball_point(_unit(np.array([ra_deg]), np.array([dec_deg]))[0], chord)),
            dtype=np.int64,
        )

    def render(self, req: CutoutRequest, noise: bool = True) -> np.ndarray:
        """The (nbands, size, size) float32 stamp of ``req``."""
        bricks = self.bricks
        parts = plan_stamp(bricks.index, req.ra_deg, req.dec_deg, req.size_pix, req.pixscale_arcsec)
        return stamp_from_bricks(
            parts,
            req.size_pix,
            len(req.bands),
            lambda row, win: bricks.window(row, win, req.bands, noise),
        )

    @cached_property
    def bricks(self) -> BrickSky:
        """The bricks of this sky (their windows, files and index)."""
        return BrickSky(self)

    def true_flux(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), 3) true g, r, z fluxes: the sweep's measured FLUX less its noise draw.

        Skies generated before catalogue fluxes were measurements (they also have no bulges
        file) stored the true flux in FLUX, which is then returned as it is.
        """
        cat, _ = self._load()
        measured = np.column_stack([cat[f"flux_{b}"][rows] for b in "grz"]).astype(np.float64)
        if not self._measured_fluxes:
            return measured
        ivar = np.column_stack([cat[f"flux_ivar_{b}"][rows] for b in "grz"]).astype(np.float64)
        sigma = np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), 0.0)
        return measured - catalogue_flux_noise(
            self.seed, cat["brickid"][rows], cat["objid"][rows], sigma
        )


def _bulges_for(root: Path, cat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``bulge_flux`` (N, 3), ``bulge_r`` (N,), ``knot_flux`` (N, 3) and the other disc
    structure columns (sky.STRUCTURE_FIELDS, (N,)) aligned with the sweep rows ``cat``.

    A sky generated before bulges existed has no bulges file: every source is then one profile;
    one generated before disc structure existed has smooth discs.
    """
    n = cat["ra"].size
    out = {"bulge_flux": np.zeros((n, 3)), "bulge_r": np.zeros(n), "knot_flux": np.zeros((n, 3))}
    out |= {k: np.zeros(n) for k in STRUCTURE_FIELDS if k != "knot_flux_nmgy"}
    path = bulges_path(root)
    if not path.exists():
        return out
    table = read_parquet(str(path))
    key = source_key(cat["brickid"], cat["objid"])
    b_key = source_key(table["brickid"].to_numpy(), table["objid"].to_numpy())
    order = np.argsort(key)
    pos = np.searchsorted(key, b_key, sorter=order)
    found = pos < n
    rows = order[np.minimum(pos, n - 1)]
    found &= key[rows] == b_key
    if not found.all():
        raise ValueError(f"{path}: {int((~found).sum())} bulges name no sweep source")
    out["bulge_flux"][rows] = np.column_stack([table[f"bulge_flux_{b}"].to_numpy() for b in "grz"])
    out["bulge_r"][rows] = table["bulge_r_arcsec"].to_numpy()
    if "knot_flux_g" in table.column_names:
        out["knot_flux"][rows] = np.column_stack(
            [table[f"knot_flux_{b}"].to_numpy() for b in "grz"]
        )
        for k in STRUCTURE_FIELDS:
            if k != "knot_flux_nmgy":
                out[k][rows] = table[k].to_numpy()
    return out
