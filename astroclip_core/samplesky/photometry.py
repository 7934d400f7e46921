"""Observed-frame SEDs of template mixtures, Milky Way extinction, and g/r/z photometry.

Fluxes follow the kcorrect template convention: coefficients are solar masses formed, the
templates are f_lambda at 10 pc, so a galaxy at redshift z has observed
``f_lambda(lambda) = sum_i c_i T_i(lambda / (1+z)) * (10 pc / D_L)^2 / (1+z)``.
Photometry is in nanomaggies (AB mag = 22.5 - 2.5 log10 flux) through the real filter curves
shipped by speclite: DECam for DR9 south, BASS g/r + MzLS z for north.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import speclite.filters
from astropy.cosmology import Planck18

from astroclip_core.samplesky.templates import (
    C_KMS,
    NEBULAR_WAVELENGTH_ANGSTROM,
    TemplateSet,
    load_templates,
)

BANDS = ("g", "r", "z")
FILTER_NAMES: dict[str, tuple[str, str, str]] = {
    "S": ("decam2014-g", "decam2014-r", "decam2014-z"),
    "N": ("BASS-g", "BASS-r", "MzLS-z"),
}
# DR9 extinction coefficients A_band / E(B-V) (Legacy Surveys DR9 documentation).
MW_EXTINCTION_COEFF: dict[str, tuple[float, float, float]] = {
    "S": (3.214, 2.165, 1.211),
    "N": (3.258, 2.176, 1.199),
}
# Observed-frame grid for photometry: covers every filter with margin, 1 A steps.
PHOT_WAVELENGTH_ANGSTROM = np.arange(3000.0, 11101.0, 1.0)
# Redshift grid of the template photometry tables.
Z_GRID = np.round(np.arange(0.005, 1.6001, 0.0025), 6)
TEN_PC_MPC = 1e-5
# The AB zero point as f_lambda * lambda^2: 3631 Jy * c (c in A/s), erg/s/cm^2/A * A^2.
AB_FLAMBDA_TIMES_LAMBDA2 = 3631e-23 * 2.99792458e18


@lru_cache(maxsize=2)
def filters(photsys: str) -> speclite.filters.FilterSequence:
    """The g, r, z filter curves of DR9 'N' or 'S'."""
    if photsys not in FILTER_NAMES:
        raise ValueError(f"photsys {photsys!r} must be 'N' or 'S'")
    return speclite.filters.load_filters(*FILTER_NAMES[photsys])


def mw_extinction_curve(wavelength_angstrom: np.ndarray, photsys: str = "S") -> np.ndarray:
    """A_lambda / E(B-V): a power law in wavelength through the DR9 g, r, z coefficients."""
    eff = np.array([4830.0, 6400.0, 9200.0])
    coeff = np.array(MW_EXTINCTION_COEFF[photsys])
    slope, icpt = np.polyfit(np.log(eff), np.log(coeff), 1)
    return np.exp(icpt + slope * np.log(np.asarray(wavelength_angstrom, dtype=np.float64)))


def mw_transmission(ebv: np.ndarray, photsys: str) -> np.ndarray:
    """(N, 3) MW_TRANSMISSION_G/R/Z = 10^(-0.4 R_band E(B-V))."""
    coeff = np.array(MW_EXTINCTION_COEFF[photsys])
    return 10 ** (-0.4 * np.asarray(ebv, dtype=np.float64)[:, None] * coeff[None, :])


def distance_factor(z: np.ndarray) -> np.ndarray:
    """(10 pc / D_L)^2 / (1 + z): scales 10-pc template fluxes to observed f_lambda."""
    z = np.asarray(z, dtype=np.float64)
    dl_mpc = Planck18.luminosity_distance(z).value
    return (TEN_PC_MPC / dl_mpc) ** 2 / (1.0 + z)


def rest_continuum(
    templates: TemplateSet, coeffs: np.ndarray, rest_wavelength_angstrom: np.ndarray
) -> np.ndarray:
    """Continuum f_lambda (10-pc units) of a template mix ``coeffs`` (5,) at rest wavelengths."""
    rest = np.asarray(rest_wavelength_angstrom, dtype=np.float64)
    cont = np.zeros_like(rest)
    for i in np.flatnonzero(coeffs):
        cont += coeffs[i] * np.interp(rest, templates.wavelength_angstrom, templates.continuum[i])
    return cont


def rest_lines(
    line_flux: np.ndarray,
    rest_wavelength_angstrom: np.ndarray,
    sigma_kms: float,
    extra_sigma_rest_angstrom: float = 0.0,
) -> np.ndarray:
    """Emission lines (10-pc f_lambda per rest A) of fluxes ``line_flux`` (n_lines,), one per
    :data:`NEBULAR_LINES`: Gaussians of velocity width ``sigma_kms`` at the exact vacuum
    wavelengths, broadened by ``extra_sigma_rest_angstrom`` (e.g. an LSF)."""
    rest = np.asarray(rest_wavelength_angstrom, dtype=np.float64)
    out = np.zeros_like(rest)
    for lam, flux in zip(NEBULAR_WAVELENGTH_ANGSTROM, line_flux, strict=True):
        if flux <= 0:
            continue
        sigma = float(np.hypot(lam * sigma_kms / C_KMS, extra_sigma_rest_angstrom))
        lo, hi = np.searchsorted(rest, [lam - 8 * sigma, lam + 8 * sigma])
        out[lo:hi] += (
            flux * np.exp(-0.5 * ((rest[lo:hi] - lam) / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)
        )
    return out


def rest_sed(
    templates: TemplateSet,
    coeffs: np.ndarray,
    rest_wavelength_angstrom: np.ndarray,
    sigma_kms: float,
    line_flux: np.ndarray | None = None,
) -> np.ndarray:
    """Continuum + lines (10-pc f_lambda) of a template mix at sorted rest wavelengths;
    continuum only when ``line_flux`` (n_lines,) is None."""
    cont = rest_continuum(templates, coeffs, rest_wavelength_angstrom)
    if line_flux is None:
        return cont
    return cont + rest_lines(line_flux, rest_wavelength_angstrom, sigma_kms)


def observed_sed(
    coeffs: np.ndarray,
    z: float,
    wavelength_angstrom: np.ndarray,
    sigma_kms: float = 80.0,
    ebv: float = 0.0,
    photsys: str = "S",
    line_flux: np.ndarray | None = None,
) -> np.ndarray:
    """Observed f_lambda (erg/s/cm^2/A) of a galaxy with ``coeffs`` (5,) and nebular
    ``line_flux`` (n_lines,) at redshift ``z``, with Milky Way extinction of ``ebv`` applied."""
    wave = np.asarray(wavelength_angstrom, dtype=np.float64)
    sed = rest_sed(load_templates(), coeffs, wave / (1 + z), sigma_kms, line_flux)
    sed *= distance_factor(np.array([z]))[0]
    if ebv:
        sed *= 10 ** (-0.4 * ebv * mw_extinction_curve(wave, photsys))
    return sed


def line_nanomaggies(line_flux: np.ndarray, z: np.ndarray, photsys: str) -> np.ndarray:
    """(N, 3) g/r/z nanomaggies (before Milky Way extinction) of the emission lines alone.

    ``line_flux`` (N, n_lines): rest-frame integrated fluxes at 10 pc. A line of observed flux
    F at lambda_o adds F lambda_o R(lambda_o) / integral(f_AB(lambda) lambda R dlambda) maggies:
    the same photon-weighted integral speclite applies to the continuum, for a delta function.
    """
    line_flux = np.atleast_2d(np.asarray(line_flux, dtype=np.float64))
    z = np.asarray(z, dtype=np.float64)
    obs_wave = NEBULAR_WAVELENGTH_ANGSTROM[None, :] * (1 + z[:, None])  # (N, n_lines)
    # Observed integrated flux = rest flux * (10 pc / D_L)^2 = rest * distance_factor * (1+z).
    obs_flux = line_flux * (distance_factor(z) * (1 + z))[:, None]
    out = np.zeros((z.size, 3))
    for b, flt in enumerate(filters(photsys)):
        w, resp = flt.wavelength, flt.response
        norm = np.trapezoid(AB_FLAMBDA_TIMES_LAMBDA2 / w**2 * w * resp, w)
        out[:, b] = np.sum(obs_flux * obs_wave * np.interp(obs_wave, w, resp, 0, 0), 1) / norm
    return out * 1e9


def ab_nanomaggies(
    flambda: np.ndarray, wavelength_angstrom: np.ndarray, photsys: str
) -> np.ndarray:
    """(..., 3) g/r/z fluxes in nanomaggies of f_lambda spectra (erg/s/cm^2/A) (..., n_wave)."""
    flambda = np.atleast_2d(flambda)
    table = filters(photsys).get_ab_maggies(flambda, wavelength_angstrom)
    return np.column_stack([np.asarray(table[name]) for name in table.colnames]) * 1e9


@dataclass(frozen=True)
class TemplatePhotometry:
    """g/r/z nanomaggies of one solar mass formed of each template vs redshift.

    ``nanomaggies``: (5, 3, n_z) on ``z_grid``, before Milky Way extinction, continuum only: each
    galaxy's emission lines are added by :func:`line_nanomaggies`.
    """

    photsys: str
    z_grid: np.ndarray
    nanomaggies: np.ndarray

    def fluxes(self, coeffs: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(N, 3) nanomaggies of galaxies with ``coeffs`` (N, 5) at redshifts ``z`` (N,)."""
        z = np.asarray(z, dtype=np.float64)
        if z.min() < self.z_grid[0] or z.max() > self.z_grid[-1]:
            raise ValueError(f"redshift outside the table range {self.z_grid[[0, -1]]}")
        per_template = np.stack(
            [
                np.stack(
                    [np.interp(z, self.z_grid, self.nanomaggies[t, b]) for b in range(3)], axis=-1
                )
                for t in range(self.nanomaggies.shape[0])
            ],
            axis=1,
        )  # (N, 5, 3)
        return np.einsum("nt,ntb->nb", coeffs, per_template)


@lru_cache(maxsize=2)
def template_photometry(photsys: str) -> TemplatePhotometry:
    """Build (once per process) the template photometry table of 'N' or 'S'."""
    templates = load_templates()
    wave = PHOT_WAVELENGTH_ANGSTROM
    out = np.zeros((templates.n_templates, 3, Z_GRID.size))
    dist = distance_factor(Z_GRID)
    for t in range(templates.n_templates):
        coeffs = np.zeros(templates.n_templates)
        coeffs[t] = 1.0
        seds = np.stack(
            [rest_continuum(templates, coeffs, wave / (1 + z)) for z in Z_GRID]
        )  # (n_z, n_wave) at 10 pc
        out[t] = (ab_nanomaggies(seds, wave, photsys) * dist[:, None]).T
    return TemplatePhotometry(photsys=photsys, z_grid=Z_GRID, nanomaggies=out)
