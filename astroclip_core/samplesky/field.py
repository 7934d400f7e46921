"""The faint field of the sample sky's images: stars and galaxies at real sky densities.

The sweep lists the sky's catalogue sources (spectroscopic targets, a few imaging-only
galaxies per target, some stars): a few hundred per square degree, about 1% of what a real DR9
sweep holds. Listing the rest would make the sweeps, and every stage that reads them, about a
hundred times bigger, so the images take them from here instead, and the sweep does not list
them (the README says so):

- **Galaxies** follow r-band number counts: N(<r) = 3,700 deg^-2 at r = 21 (Yasuda et al. 2001,
  SDSS), d log N / dm = 0.47 brighter and 0.33 fainter (Yasuda et al. 2001; Metcalfe et al.
  2001's faint counts), over 16 < r < 23.5 (about the DR9 r-band galaxy depth, 23.4): about
  25,000 deg^-2. Each is a galaxy of a library drawn from the sky's own FAINT population (so
  its colours, sizes, Sersic index and ellipticity follow the same relations), picked at its
  magnitude, turned to a random position angle, and drawn as one Sersic profile; radii are
  capped at ``MAX_RADIUS_ARCSEC`` (about 0.05% of them are larger), which bounds how far a
  field stamp reaches and so how many cells a window must look at.
- **Stars**: N(<r) = 1,500 deg^-2 at r = 21 with d log N / dm = 0.12, over 16 < r < 23.5 (high
  Galactic latitude, b ~ 40 deg as the default footprint: Bahcall & Soneira 1980-like counts,
  uncertain by a factor of ~2): about 2,600 deg^-2, with the temperatures of
  :mod:`astroclip_core.samplesky.pointsources`.

The field is a deterministic function of (seed, BRICKID, cell): each brick's unique area is cut
into ``CELLS_PER_SIDE`` x ``CELLS_PER_SIDE`` cells in (RA, sin Dec), each drawn on its own, so a
brick window needs only the cells that reach it, and every pixel still depends only on (seed,
brick, band, x, y).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from astroclip_core.samplesky.ids import ebv_at
from astroclip_core.samplesky.photometry import mw_transmission
from astroclip_core.samplesky.pointsources import draw_stars_at
from astroclip_core.samplesky.population import draw_galaxies

CELLS_PER_SIDE = 10
LIBRARY_SIZE = 20000
LIBRARY_STREAM = 7101  # random streams of the field (never renumber: the images depend on them)
CELL_STREAM = 7102
PICK_SPREAD = 8  # a galaxy is picked among the library's 2 * PICK_SPREAD + 1 nearest in r
MAX_RADIUS_ARCSEC = 8.0
SQ_DEG_PER_SR = (180.0 / np.pi) ** 2


@dataclass(frozen=True)
class CountLaw:
    """Cumulative counts N(<m) (deg^-2): ``n_pivot_deg2`` at ``m_pivot``, log slopes
    ``slope_bright`` / ``slope_faint`` either side of it, over ``m_min`` < m < ``m_max``."""

    n_pivot_deg2: float
    m_pivot: float
    slope_bright: float
    slope_faint: float
    m_min: float
    m_max: float

    def cumulative(self, m: np.ndarray) -> np.ndarray:
        """N(<m) per square degree."""
        m = np.asarray(m, dtype=np.float64)
        slope = np.where(m < self.m_pivot, self.slope_bright, self.slope_faint)
        return self.n_pivot_deg2 * 10 ** (slope * (m - self.m_pivot))

    def density_deg2(self) -> float:
        """Sources per square degree between m_min and m_max."""
        return float(self.cumulative(self.m_max) - self.cumulative(self.m_min))

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` magnitudes following the counts (inverse CDF on a 0.001 mag grid)."""
        grid, cdf = _cdf_grid(self)
        return np.interp(rng.uniform(size=n) * cdf[-1], cdf, grid)


@lru_cache(maxsize=8)
def _cdf_grid(law: CountLaw) -> tuple[np.ndarray, np.ndarray]:
    """(magnitudes, N(<m) - N(<m_min)) of ``law`` on a 0.001 mag grid."""
    grid = np.linspace(law.m_min, law.m_max, int((law.m_max - law.m_min) * 1000) + 1)
    return grid, law.cumulative(grid) - law.cumulative(law.m_min)


GALAXY_COUNTS = CountLaw(3700.0, 21.0, 0.47, 0.33, 16.0, 23.5)
STAR_COUNTS = CountLaw(1500.0, 21.0, 0.12, 0.12, 16.0, 23.5)


@dataclass(frozen=True)
class FieldSources:
    """N field sources (all arrays (N,), ``flux_nmgy`` (N, 3) observed g, r, z). A star has
    ``shape_r_arcsec`` 0; a galaxy is one Sersic of index ``sersic_n``."""

    ra_deg: np.ndarray
    dec_deg: np.ndarray
    sersic_n: np.ndarray
    shape_r_arcsec: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    flux_nmgy: np.ndarray

    def __len__(self) -> int:
        return int(self.ra_deg.size)


@dataclass(frozen=True)
class _Library:
    """Library galaxies sorted by r magnitude (before Milky Way extinction)."""

    r_mag: np.ndarray
    flux_nmgy: np.ndarray  # (N, 3)
    sersic_n: np.ndarray
    shape_r_arcsec: np.ndarray
    ellipticity: np.ndarray


@lru_cache(maxsize=4)
def _library(seed: int, photsys: str) -> _Library:
    """The galaxies field galaxies are picked from: the sky's FAINT population, drawn once."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, LIBRARY_STREAM, ord(photsys)]))
    gal = draw_galaxies(rng, LIBRARY_SIZE, faint=True, photsys=photsys)
    r_mag = 22.5 - 2.5 * np.log10(np.maximum(gal.flux_nmgy[:, 1], 1e-12))
    order = np.argsort(r_mag, kind="stable")
    return _Library(
        r_mag=r_mag[order],
        flux_nmgy=gal.flux_nmgy[order],
        sersic_n=gal.sersic_n[order],
        shape_r_arcsec=gal.shape_r_arcsec[order],
        ellipticity=np.hypot(gal.e1, gal.e2)[order],
    )


def max_galaxy_radius_arcsec(seed: int, photsys: str) -> float:
    """The largest half-light radius a field galaxy can have."""
    return min(float(_library(seed, photsys).shape_r_arcsec.max()), MAX_RADIUS_ARCSEC)


def cell_bounds(
    ra1: float, ra2: float, dec1: float, dec2: float, i: int, j: int
) -> tuple[float, float, float, float]:
    """(ra_lo, ra_hi, sin_dec_lo, sin_dec_hi) of cell (i along RA, j along Dec) of a brick."""
    s1, s2 = np.sin(np.radians(dec1)), np.sin(np.radians(dec2))
    return (
        ra1 + (ra2 - ra1) * i / CELLS_PER_SIDE,
        ra1 + (ra2 - ra1) * (i + 1) / CELLS_PER_SIDE,
        s1 + (s2 - s1) * j / CELLS_PER_SIDE,
        s1 + (s2 - s1) * (j + 1) / CELLS_PER_SIDE,
    )


def cell_of(
    ra1: float, ra2: float, dec1: float, dec2: float, ra_deg: np.ndarray, dec_deg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) cell of positions inside a brick's unique area (bounds ra1..ra2, dec1..dec2)."""
    s1, s2 = np.sin(np.radians(dec1)), np.sin(np.radians(dec2))
    i = np.floor((np.mod(ra_deg - ra1, 360.0)) / (ra2 - ra1) * CELLS_PER_SIDE).astype(np.int64)
    j = np.floor((np.sin(np.radians(dec_deg)) - s1) / (s2 - s1) * CELLS_PER_SIDE).astype(np.int64)
    return np.clip(i, 0, CELLS_PER_SIDE - 1), np.clip(j, 0, CELLS_PER_SIDE - 1)


@lru_cache(maxsize=4096)
def field_cell(
    seed: int,
    photsys: str,
    brickid: int,
    bounds: tuple[float, float, float, float],
    i: int,
    j: int,
) -> FieldSources:
    """The field sources of cell (i, j) of brick ``brickid`` (``bounds``: RA1, RA2, DEC1, DEC2).

    Galaxies first, then stars; positions uniform on the sphere inside the cell.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, CELL_STREAM, brickid, i, j]))
    ra_lo, ra_hi, s_lo, s_hi = cell_bounds(*bounds, i, j)
    area_deg2 = np.radians(ra_hi - ra_lo) * (s_hi - s_lo) * SQ_DEG_PER_SR
    n_gal = int(rng.poisson(GALAXY_COUNTS.density_deg2() * area_deg2))
    n_star = int(rng.poisson(STAR_COUNTS.density_deg2() * area_deg2))
    n = n_gal + n_star
    ra = rng.uniform(ra_lo, ra_hi, n) % 360.0
    dec = np.degrees(np.arcsin(rng.uniform(s_lo, s_hi, n)))
    lib = _library(seed, photsys)
    r_mag = GALAXY_COUNTS.draw(rng, n_gal)
    pick = np.searchsorted(lib.r_mag, r_mag) + rng.integers(-PICK_SPREAD, PICK_SPREAD + 1, n_gal)
    pick = np.clip(pick, 0, lib.r_mag.size - 1)
    # Scaled to the drawn magnitude (within ~0.01 mag of the pick's own, except at the ends).
    gal_flux = lib.flux_nmgy[pick] * 10 ** (-0.4 * (r_mag - lib.r_mag[pick]))[:, None]
    angle = rng.uniform(0, np.pi, n_gal)
    stars = draw_stars_at(rng, STAR_COUNTS.draw(rng, n_star), photsys)
    flux = np.concatenate([gal_flux, stars.flux_nmgy]) * mw_transmission(ebv_at(ra, dec), photsys)
    zeros = np.zeros(n_star)
    return FieldSources(
        ra_deg=ra,
        dec_deg=dec,
        sersic_n=np.concatenate([lib.sersic_n[pick], zeros]),
        shape_r_arcsec=np.concatenate(
            [np.minimum(lib.shape_r_arcsec[pick], MAX_RADIUS_ARCSEC), zeros]
        ),
        e1=np.concatenate([lib.ellipticity[pick] * np.cos(2 * angle), zeros]),
        e2=np.concatenate([lib.ellipticity[pick] * np.sin(2 * angle), zeros]),
        flux_nmgy=flux,
    )
