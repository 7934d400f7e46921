"""The kcorrect v4 spectral templates, split into a continuum and exact-wavelength emission lines.

The five templates of ``kcorrect-default-v4.fits`` (HDU FLUX) give f_lambda in
erg/s/cm^2/A for one solar mass formed, seen from 10 pc, on a log-spaced rest-frame grid
(about 4 A per pixel in the optical). Their emission lines are smeared over 2-3 template pixels
and centred on whatever grid point is nearest, so a redshifted line would land several A off its
true position. We therefore fit each line group with Gaussians at the vacuum rest wavelengths,
subtract them from the template (the continuum keeps the absorption features), and keep the
fitted line fluxes for reference. Spectra and photometry use the continuum only and add each
galaxy's own nebular lines (BPT ratios, dust; samplesky/nebular.py) as Gaussians at exact
wavelengths: the templates' fixed line ratios are not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import fitsio
import kcorrect
import numpy as np
from scipy.optimize import lsq_linear

C_KMS = 299792.458
TEMPLATE_FILE = Path(kcorrect.__file__).parent / "data" / "templates" / "kcorrect-default-v4.fits"

# Emission lines (vacuum rest wavelengths, A) grouped by the template window they are fitted in.
# A component is a tuple of (wavelength, relative strength) rendered with one amplitude.
LINE_GROUPS: tuple[tuple[tuple[float, float], tuple[tuple[tuple[float, float], ...], ...]], ...] = (
    ((3690.0, 3770.0), (((3727.09, 1.0), (3729.88, 1.35)),)),  # [O II] doublet
    ((3845.0, 3895.0), (((3870.86, 1.0),),)),  # [Ne III]
    ((4080.0, 4125.0), (((4102.89, 1.0),),)),  # H delta
    ((4318.0, 4365.0), (((4341.69, 1.0),),)),  # H gamma
    ((4835.0, 4890.0), (((4862.68, 1.0),),)),  # H beta
    ((4935.0, 5035.0), (((4960.30, 1.0),), ((5008.24, 1.0),))),  # [O III]
    ((6280.0, 6325.0), (((6302.05, 1.0),),)),  # [O I]
    ((6520.0, 6612.0), (((6549.86, 1.0), (6585.27, 2.95)), ((6564.61, 1.0),))),  # [N II], H alpha
    ((6695.0, 6755.0), (((6718.29, 1.0),), ((6732.67, 1.0),))),  # [S II]
)

# The nebular lines a galaxy's spectrum and photometry carry (name, vacuum rest wavelength A).
# Their fluxes are drawn per galaxy (samplesky/nebular.py, ``Galaxies.line_flux``); the kcorrect
# templates only give the continuum under them (their own lines are split off in load_templates).
NEBULAR_LINES: tuple[tuple[str, float], ...] = (
    ("[O II]3727", 3727.09),
    ("[O II]3729", 3729.88),
    ("[Ne III]3870", 3870.86),
    ("Hdelta", 4102.89),
    ("Hgamma", 4341.69),
    ("Hbeta", 4862.68),
    ("[O III]4960", 4960.30),
    ("[O III]5008", 5008.24),
    ("[O I]6302", 6302.05),
    ("[N II]6550", 6549.86),
    ("Halpha", 6564.61),
    ("[N II]6585", 6585.27),
    ("[S II]6718", 6718.29),
    ("[S II]6733", 6732.67),
)
NEBULAR_WAVELENGTH_ANGSTROM = np.array([lam for _, lam in NEBULAR_LINES])
# Side bands (rest A) that define the continuum under H alpha for its equivalent width.
HALPHA_CONTINUUM_BANDS_ANGSTROM = ((6490.0, 6530.0), (6600.0, 6640.0))

# Rest wavelengths (vacuum, A) used to mark lines in figures and checked by the tests.
EMISSION_LINES_ANGSTROM: dict[str, float] = {
    "[O II]": 3728.48,
    "H$\\beta$": 4862.68,
    "[O III]": 5008.24,
    "H$\\alpha$": 6564.61,
}
ABSORPTION_LINES_ANGSTROM: dict[str, float] = {
    "Ca K": 3934.78,
    "Ca H": 3969.59,
    "G band": 4305.6,
    "Mg b": 5176.7,
    "Na D": 5895.6,
}


@dataclass(frozen=True)
class TemplateSet:
    """The continuum templates and their emission lines.

    ``continuum``: (5, n_wave) f_lambda per solar mass formed at 10 pc on ``wavelength_angstrom``.
    ``line_wavelength_angstrom``: (n_lines,) vacuum rest wavelengths.
    ``line_flux``: (5, n_lines) integrated line flux (erg/s/cm^2) per solar mass formed at 10 pc.
    ``mremain``/``mets``/``m300``/``m1000``: (5,) remaining mass fraction, metallicity and the
    fraction of the mass formed in the last 300 Myr / 1 Gyr, per template.
    """

    wavelength_angstrom: np.ndarray
    continuum: np.ndarray
    line_wavelength_angstrom: np.ndarray
    line_flux: np.ndarray
    mremain: np.ndarray
    mets: np.ndarray
    m300: np.ndarray
    m1000: np.ndarray

    @property
    def n_templates(self) -> int:
        """Number of templates (5)."""
        return int(self.continuum.shape[0])


def _gauss(wave: np.ndarray, center: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((wave - center) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))


def _component_shape(
    wave: np.ndarray, comp: tuple[tuple[float, float], ...], sigma_kms: float
) -> np.ndarray:
    total = sum(s for _, s in comp)
    return sum(s / total * _gauss(wave, lam, lam * sigma_kms / C_KMS) for lam, s in comp)


def _split_group(
    wave: np.ndarray,
    flux: np.ndarray,
    window: tuple[float, float],
    components: tuple[tuple[tuple[float, float], ...], ...],
) -> tuple[np.ndarray, np.ndarray]:
    """(continuum, component fluxes) of one template in one line window.

    A linear continuum plus non-negative Gaussian components is fitted; where the lines are
    significant, the line cores are replaced by the fitted continuum and the flux above it
    (integrated, so photometry is unchanged) is shared among the components in the fitted ratio.
    """
    sel = (wave > window[0]) & (wave < window[1])
    w, f = wave[sel], flux[sel]
    scale = max(float(np.abs(f).max()), 1e-30)
    best: tuple[float, np.ndarray] | None = None
    # The templates' line width is not documented; pick the best of a few velocity widths.
    for sigma_kms in (100.0, 150.0, 200.0, 250.0, 300.0):
        shapes = [_component_shape(w, comp, sigma_kms) for comp in components]
        design = np.column_stack([np.ones_like(w), (w - w.mean()) / 100.0, *shapes])
        lo = np.r_[-np.inf, -np.inf, np.zeros(len(shapes))]
        res = lsq_linear(design, f / scale, bounds=(lo, np.inf))
        cost = float(np.sum((design @ res.x - f / scale) ** 2))
        if best is None or cost < best[0]:
            best = (cost, res.x * scale)
    assert best is not None
    amps = best[1][2:]
    continuum = f.copy()
    centers = np.array([lam for comp in components for lam, _ in comp])
    core = np.min(np.abs(w[:, None] - centers[None, :]), axis=1) < 0.0025 * centers.mean()
    # Continuum under the lines: a straight line through the window outside the line cores.
    slope, intercept = np.polyfit(w[~core], f[~core], 1)
    cont_fit = slope * w + intercept  # (n_window,)
    # Equivalent width below 0.5 A: no real emission, keep the template as it is.
    if amps.sum() <= 0.5 * float(np.median(cont_fit)):
        return continuum, np.zeros(len(components))
    continuum[core] = cont_fit[core]
    excess = np.trapezoid(np.where(core, f - cont_fit, 0.0), w)
    return continuum, max(float(excess), 0.0) * amps / amps.sum()


@lru_cache(maxsize=1)
def load_templates(path: str = str(TEMPLATE_FILE)) -> TemplateSet:
    """Read the kcorrect v4 templates and split each into continuum + emission lines."""
    table = fitsio.read(path, "FLUX")
    wave = np.asarray(table["wave"][0], dtype=np.float64)  # (10000,) rest-frame A
    flux = np.asarray(table["flux"][0], dtype=np.float64)  # (5, 10000)
    continuum = flux.copy()
    line_waves: list[float] = []
    line_fluxes: list[np.ndarray] = []
    for window, components in LINE_GROUPS:
        sel = (wave > window[0]) & (wave < window[1])
        per_template = []
        for t in range(flux.shape[0]):
            cont, amps = _split_group(wave, flux[t], window, components)
            continuum[t, sel] = cont
            per_template.append(amps)
        amps_tc = np.array(per_template)  # (5, n_components)
        for k, comp in enumerate(components):
            total = sum(s for _, s in comp)
            for lam, s in comp:
                line_waves.append(lam)
                line_fluxes.append(amps_tc[:, k] * s / total)
    return TemplateSet(
        wavelength_angstrom=wave,
        continuum=np.clip(continuum, 0.0, None),
        line_wavelength_angstrom=np.array(line_waves),
        line_flux=np.column_stack(line_fluxes),
        mremain=fitsio.read(path, "MREMAIN").astype(np.float64),
        mets=fitsio.read(path, "METS").astype(np.float64),
        m300=fitsio.read(path, "M300").astype(np.float64),
        m1000=fitsio.read(path, "M1000").astype(np.float64),
    )


def halpha_continuum(templates: TemplateSet) -> np.ndarray:
    """(5,) mean continuum f_lambda (per solar mass formed, 10 pc) of each template in the
    H alpha side bands: a galaxy's H alpha continuum is ``coeffs @ halpha_continuum(...)``."""
    wave = templates.wavelength_angstrom
    sel = np.zeros(wave.size, dtype=bool)
    for lo, hi in HALPHA_CONTINUUM_BANDS_ANGSTROM:
        sel |= (wave > lo) & (wave < hi)
    return templates.continuum[:, sel].mean(axis=1)
