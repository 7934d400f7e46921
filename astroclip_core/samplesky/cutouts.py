"""Cutouts of the sample sky, rendered on request from its sweep catalogues.

Contract (the same as the real cutout service's, for the parameters the project uses): a
(nbands, size, size) float32 stamp in nanomaggies, TAN projection centred on (ra, dec), bands
in the requested order; sky outside the footprint is exactly zero; otherwise every sweep
source whose light reaches the stamp is drawn, convolved with the PSF of the brick at the
centre, plus Gaussian background noise at that brick's depth. The noise is seeded from the
sky's seed and the canonical query, so the same request gives the same bytes and the noise
does not depend on which sources are there.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from astroclip_core.formats.legacysurvey import SWEEP_COLUMNS, read_sweep
from astroclip_core.fsio import read_parquet
from astroclip_core.samplesky.catalogs import catalogue_flux_noise
from astroclip_core.samplesky.generate import bulges_path, legacysurvey_root, read_manifest
from astroclip_core.samplesky.ids import brick_conditions, bricks_of, source_key
from astroclip_core.samplesky.render import TRUNCATION_RADII, SourceShapes, render_sources
from astroclip_core.sky.healpix import pixels_of
from astroclip_core.sources.layout import photsys_of_dec

BAND_INDEX = {"g": 0, "r": 1, "z": 2}
MAX_SIZE_PIX = 512
LAYER = "ls-dr9"
PSF_MARGIN_ARCSEC = 6.0


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
    scale = np.radians(pixscale_arcsec / 3600.0)
    xi = -(x - (size + 1) / 2.0) * scale
    eta = (y - (size + 1) / 2.0) * scale
    dec0, ra0 = np.radians(dec0_deg), np.radians(ra0_deg)
    denom = np.cos(dec0) - eta * np.sin(dec0)
    ra = ra0 + np.arctan2(xi, denom)
    dec = np.arctan2(np.sin(dec0) + eta * np.cos(dec0), np.hypot(xi, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


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
        cat, _ = self._load()
        size, scale = req.size_pix, req.pixscale_arcsec
        ys, xs = np.mgrid[1 : size + 1, 1 : size + 1]
        ra, dec = pixel_to_sky(xs.ravel(), ys.ravel(), req.ra_deg, req.dec_deg, scale, size)
        covered = np.isin(pixels_of(ra, dec), self.footprint).reshape(size, size)
        nb = len(req.bands)
        if not covered.any():
            return np.zeros((nb, size, size), dtype=np.float32)
        band_idx = [BAND_INDEX[b] for b in req.bands]
        photsys = photsys_of_dec(req.dec_deg)
        brick = bricks_of(np.array([req.ra_deg]), np.array([req.dec_deg]))
        cond = brick_conditions(self.seed, brick.brickid, np.array([photsys.encode()]))
        fwhm = cond.psf_fwhm_arcsec[0, band_idx]
        half_diag = size * scale / np.sqrt(2.0)
        near = self.sources_near(req.ra_deg, req.dec_deg, half_diag + PSF_MARGIN_ARCSEC + 60.0)
        # Keep a source when its truncated profile (plus PSF wings) can reach the stamp.
        if near.size:
            sep = _sep_arcsec(cat["ra"][near], cat["dec"][near], req.ra_deg, req.dec_deg)
            near = near[
                sep < half_diag + PSF_MARGIN_ARCSEC + TRUNCATION_RADII * cat["shape_r"][near]
            ]
        flux = self.true_flux(near)[:, band_idx] if near.size else np.zeros((0, nb))
        bulge_flux = cat["bulge_flux"][near][:, band_idx] if near.size else np.zeros((0, nb))
        with_bulge = cat["bulge_r"][near] > 0
        bulged = near[with_bulge]
        # Each source is its disc (the sweep profile, carrying the flux not in the bulge) plus,
        # where it has one, a round de Vaucouleurs bulge at the same position.
        shapes = SourceShapes(
            np.r_[cat["ra"][near], cat["ra"][bulged]],
            np.r_[cat["dec"][near], cat["dec"][bulged]],
            np.r_[cat["type"][near], np.full(bulged.size, "DEV")],
            np.r_[cat["sersic"][near], np.full(bulged.size, 4.0)],
            np.r_[cat["shape_r"][near], cat["bulge_r"][bulged]],
            np.r_[cat["shape_e1"][near], np.zeros(bulged.size)],
            np.r_[cat["shape_e2"][near], np.zeros(bulged.size)],
            np.r_[flux - bulge_flux, bulge_flux[with_bulge]],
        )
        image = render_sources(shapes, req.ra_deg, req.dec_deg, size, scale, fwhm)
        if noise:
            image += self._noise(req, cond.psfdepth_mag[0, band_idx], fwhm)
        image[:, ~covered] = 0.0
        return image

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

    def _noise(
        self, req: CutoutRequest, depth_mag: np.ndarray, fwhm_arcsec: np.ndarray
    ) -> np.ndarray:
        """Background noise (nb, size, size), per-pixel sigma from the 5-sigma PSF depth."""
        digest = hashlib.sha256(f"{self.seed}|{req.key()}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        sigma_psf = 10 ** ((22.5 - depth_mag) / 2.5) / 5.0
        # PSF flux error = pixel sigma * sqrt(effective area), area = 4 pi sigma_psf^2 (pixels).
        n_eff = 4 * np.pi * (fwhm_arcsec / 2.3548 / req.pixscale_arcsec) ** 2
        sigma_pix = sigma_psf / np.sqrt(n_eff)
        shape = (len(req.bands), req.size_pix, req.size_pix)
        return (rng.standard_normal(shape) * sigma_pix[:, None, None]).astype(np.float32)


def _bulges_for(root: Path, cat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``bulge_flux`` (N, 3) and ``bulge_r`` (N,) aligned with the sweep rows ``cat``.

    A sky generated before bulges existed has no bulges file: every source is then one profile.
    """
    n = cat["ra"].size
    out = {"bulge_flux": np.zeros((n, 3)), "bulge_r": np.zeros(n)}
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
    return out


def _sep_arcsec(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> np.ndarray:
    u = _unit(ra, dec)
    v = _unit(np.array([ra0]), np.array([dec0]))[0]
    return np.degrees(2 * np.arcsin(np.clip(np.linalg.norm(u - v, axis=1) / 2, 0, 1))) * 3600.0
