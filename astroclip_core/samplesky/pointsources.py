"""Stars and quasars: the point sources of the imaging sky and the catalogue's non-galaxy rows.

Stars are black bodies with the strongest absorption lines (Balmer, Ca H&K, Mg b, Na D);
quasars a power law f_nu ~ nu^-0.5 with broad emission lines and Lyman-alpha forest
absorption. Both are normalised to an r-band magnitude; they only need to look right and be
removed by the selection, so they are simpler than the galaxies.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from astroclip_core.samplesky.photometry import PHOT_WAVELENGTH_ANGSTROM, ab_nanomaggies

H_C_OVER_K_ANGSTROM_K = 1.438777e8
# (rest wavelength A, equivalent width A, sigma A); negative EW = absorption.
STAR_LINES = (
    (3934.78, -6.0, 3.0),
    (3969.59, -5.0, 3.0),
    (4102.89, -3.0, 6.0),
    (4341.69, -3.0, 6.0),
    (4862.68, -3.5, 6.0),
    (5176.7, -3.0, 4.0),
    (5895.6, -2.5, 3.0),
    (6564.61, -3.0, 6.0),
)
QSO_LINES = (
    (1215.67, 90.0),
    (1549.06, 35.0),
    (1908.73, 20.0),
    (2798.75, 30.0),
    (4862.68, 45.0),
    (5008.24, 12.0),
    (6564.61, 200.0),
)
QSO_LINE_FWHM_KMS = 4000.0
T_GRID_K = np.geomspace(3000.0, 12000.0, 120)


def star_sed(temperature_k: float, wavelength_angstrom: np.ndarray) -> np.ndarray:
    """Black body f_lambda with absorption lines, normalised to 1 at 5500 A (continuum)."""
    wave = np.asarray(wavelength_angstrom, dtype=np.float64)

    def planck(w: np.ndarray) -> np.ndarray:
        return w**-5 / np.expm1(H_C_OVER_K_ANGSTROM_K / (w * temperature_k))

    cont = planck(wave) / planck(np.array(5500.0))
    profile = np.ones_like(wave)
    for lam, ew, sigma in STAR_LINES:
        # Balmer lines are strongest in A stars, metal lines in cool stars.
        weight = (
            np.clip((temperature_k - 4500) / 4000, 0.1, 1.5)
            if lam in (4102.89, 4341.69, 4862.68, 6564.61)
            else np.clip((7000 - temperature_k) / 2500, 0.2, 1.5)
        )
        profile += (
            ew * weight * np.exp(-0.5 * ((wave - lam) / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)
        )
    return cont * np.clip(profile, 0.05, None)


def qso_sed(z: float, wavelength_angstrom: np.ndarray) -> np.ndarray:
    """Observed-frame quasar f_lambda shape at redshift ``z``, normalised to 1 at 1450 A rest."""
    rest = np.asarray(wavelength_angstrom, dtype=np.float64) / (1 + z)
    cont = (rest / 1450.0) ** -1.5
    sed = cont.copy()
    for lam, ew in QSO_LINES:
        sigma = lam * QSO_LINE_FWHM_KMS / 2.3548 / 299792.458
        sed += (
            ew
            * (lam / 1450.0) ** -1.5
            * np.exp(-0.5 * ((rest - lam) / sigma) ** 2)
            / (np.sqrt(2 * np.pi) * sigma)
        )
    # Lyman-alpha forest: the flux blueward of Ly-a is absorbed more at higher z.
    forest = np.where(rest < 1200.0, np.exp(-0.0036 * (1 + z) ** 3.46), 1.0)
    return sed * forest


@dataclass(frozen=True)
class StarColours:
    """g/r/z nanomaggies of a star SED (normalised at 5500 A) vs temperature, (n_T, 3)."""

    temperature_k: np.ndarray
    nanomaggies: np.ndarray


@lru_cache(maxsize=2)
def star_colours(photsys: str) -> StarColours:
    """Photometry of the star SEDs on a temperature grid (computed once per process)."""
    wave = PHOT_WAVELENGTH_ANGSTROM
    seds = np.stack([star_sed(t, wave) for t in T_GRID_K])
    return StarColours(T_GRID_K, ab_nanomaggies(seds, wave, photsys))


@dataclass(frozen=True)
class PointSources:
    """N stars or quasars: ``kind`` 'star'/'qso', temperature (stars) or z (quasars), and
    ``scale``: the factor that turns the normalised SED into erg/s/cm^2/A.
    ``flux_nmgy`` (N, 3) g, r, z before Milky Way extinction."""

    kind: np.ndarray
    temperature_k: np.ndarray
    z: np.ndarray
    scale: np.ndarray
    flux_nmgy: np.ndarray

    def __len__(self) -> int:
        return int(self.kind.size)


def _star_temperatures(rng: np.random.Generator, n: int) -> np.ndarray:
    """Effective temperatures weighted to cool dwarfs, as high-latitude stars are."""
    return np.clip(np.exp(rng.normal(np.log(5200.0), 0.25, n)), 3000.0, 12000.0)


def _stars_of(temp: np.ndarray, r_mag: np.ndarray, photsys: str) -> PointSources:
    """Stars of temperatures ``temp`` normalised to r magnitudes ``r_mag``."""
    table = star_colours(photsys)
    unit = np.stack(
        [np.interp(temp, table.temperature_k, table.nanomaggies[:, b]) for b in range(3)], 1
    )
    n = temp.size
    scale = 10 ** ((22.5 - r_mag) / 2.5) / unit[:, 1]
    return PointSources(np.full(n, "star"), temp, np.zeros(n), scale, unit * scale[:, None])


def draw_stars(
    rng: np.random.Generator, n: int, r_mag_range: tuple[float, float], photsys: str
) -> PointSources:
    """Stars with temperatures weighted to cool dwarfs and r magnitudes uniform in the range."""
    temp = _star_temperatures(rng, n)
    return _stars_of(temp, rng.uniform(*r_mag_range, n), photsys)


def draw_stars_at(rng: np.random.Generator, r_mag: np.ndarray, photsys: str) -> PointSources:
    """Stars with the temperatures of :func:`draw_stars` at given r magnitudes."""
    return _stars_of(_star_temperatures(rng, r_mag.size), np.asarray(r_mag), photsys)


def draw_qsos(rng: np.random.Generator, n: int, photsys: str) -> PointSources:
    """Quasars at z 0.8-3.0 with r 19-22.5."""
    z = rng.uniform(0.8, 3.0, n)
    wave = PHOT_WAVELENGTH_ANGSTROM
    unit = (
        ab_nanomaggies(np.stack([qso_sed(zi, wave) for zi in z]), wave, photsys)
        if n
        else np.zeros((0, 3))
    )
    r_flux = 10 ** ((22.5 - rng.uniform(19.0, 22.5, n)) / 2.5)
    scale = r_flux / np.maximum(unit[:, 1], 1e-300)
    return PointSources(np.full(n, "qso"), np.zeros(n), z, scale, unit * scale[:, None])
