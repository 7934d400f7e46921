"""DESI spectra of the targets on the three arm grids: noiseless model, then an observation.

The model is the target's observed SED times its fibre fraction, in 1e-17 erg/s/cm^2/A, with
a Gaussian line-spread function of FWHM 1.8 A: emission lines are drawn analytically with the
LSF width added in quadrature; the continuum is convolved numerically. An observation adds
per-pixel Gaussian noise whose variance follows a sky-like background (a smooth continuum plus
sky emission lines, brighter in the bright program) over the arm throughput, plus the source's
own photon noise, leaves small sky-line subtraction residuals, and masks a few short pixel runs
(mask bit set and ivar 0).

The noise level is calibrated per arm on a real EDR coadd (see :data:`DARK_SIGMA_1000S`): a
dark-time 1000 s sample-sky spectrum has the same median per-pixel sigma in each arm.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter1d

from astroclip_core.formats.desi import ARMS, arm_wavelength
from astroclip_core.samplesky.photometry import (
    distance_factor,
    mw_extinction_curve,
    rest_continuum,
    rest_lines,
)
from astroclip_core.samplesky.pointsources import qso_sed, star_sed
from astroclip_core.samplesky.sky import Targets
from astroclip_core.samplesky.templates import load_templates

LSF_FWHM_ANGSTROM = 1.8
LSF_SIGMA_ANGSTROM = LSF_FWHM_ANGSTROM / (2 * np.sqrt(2 * np.log(2)))
FLUX_UNIT = 1e-17  # erg/s/cm^2/A
MASK_COSMIC = 1 << 2  # DESI specmask COSMIC
# Median per-pixel sigma (1e-17 erg/s/cm^2/A) of a dark-time 1000 s coadd, per arm, measured on
# the real EDR coadd tests/data/desi/coadd-sv3-dark-26065.fits (fuji, sv3 dark; its two target
# rows have COADD_EXPTIME 1009 s and 1443 s and medians B 0.45/0.42, R 0.24/0.24, Z 0.18/0.19).
DARK_SIGMA_1000S = {"B": 0.44, "R": 0.24, "Z": 0.19}
# Source photon noise: variance = SOURCE_VARIANCE_1000S * flux (1e-17 units) at unit relative
# throughput in 1000 s. One 0.8 A pixel of 1e-17 erg/s/cm^2/A at 6500 A is ~2.6e-6 photon/s/cm^2;
# times ~8.7 m^2 of mirror and ~35% peak system throughput, ~80 photons in 1000 s.
SOURCE_VARIANCE_1000S = 1.0 / 80.0
# Sky-line subtraction residuals: Gaussian per spectrum, this fraction of the sky-line flux.
SKY_RESIDUAL_FRACTION = 0.04
SKY_LINES_FIXED = ((5578.9, 40.0), (5891.6, 12.0), (5897.6, 8.0), (6302.0, 15.0), (6365.5, 6.0))


@lru_cache(maxsize=1)
def sky_model() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per arm: (sky continuum, sky-line spectrum) on the arm grid, in units of sky *variance*.

    Each arm is scaled so that the dark sky (continuum + lines) over :func:`_throughput` gives
    the median per-pixel sigma :data:`DARK_SIGMA_1000S` in 1000 s.

    The OH forest is a fixed pseudo-random list of lines (seeded constant, not by the sky's
    seed: the night sky is the same in every release).
    """
    rng = np.random.default_rng(7_000_001)
    oh_wave = np.sort(rng.uniform(6800.0, 9900.0, 220))
    oh_amp = rng.lognormal(np.log(6.0), 0.9, oh_wave.size) * (1 + (oh_wave > 8300))
    lines = (*SKY_LINES_FIXED, *zip(oh_wave, oh_amp, strict=True))
    out = {}
    for arm in ARMS:
        wave = arm_wavelength(arm)
        cont = 0.8 + 0.5 * (wave / 5000.0) ** 2
        sky_lines = np.zeros_like(wave)
        for lam, amp in lines:
            sky_lines += amp * np.exp(-0.5 * ((wave - lam) / LSF_SIGMA_ANGSTROM) ** 2)
        # sigma(1000 s) = sqrt(k (cont + lines) / throughput); choose k so its median matches.
        shape_median = np.median(np.sqrt((cont + sky_lines) / _throughput(wave)))
        k = (DARK_SIGMA_1000S[arm] / shape_median) ** 2
        out[arm] = (k * cont, k * sky_lines)
    return out


def _throughput(wave: np.ndarray) -> np.ndarray:
    """A smooth arm throughput, dropping towards the arm ends (noise grows there)."""
    x = (wave - wave[0]) / (wave[-1] - wave[0])
    return 0.25 + 0.75 * np.sin(np.pi * np.clip(x, 0.0, 1.0)) ** 0.6


def model_spectrum(targets: Targets, i: int) -> dict[str, np.ndarray]:
    """Noiseless flux (1e-17 erg/s/cm^2/A) of target ``i`` in its fibre, per arm."""
    kind = str(targets.kind[i])
    out = {}
    for arm in ARMS:
        wave = arm_wavelength(arm)
        if kind == "sky":
            out[arm] = np.zeros_like(wave)
            continue
        if kind == "star":
            sed = targets.sed_scale[i] * star_sed(float(targets.temperature_k[i]), wave)
            sed = gaussian_filter1d(sed, LSF_SIGMA_ANGSTROM / 0.8, mode="nearest")
        elif kind == "qso":
            sed = targets.sed_scale[i] * qso_sed(float(targets.z[i]), wave)
        else:
            sed = _galaxy_sed(targets, i, wave)
        mw = 10 ** (-0.4 * targets.ebv[i] * mw_extinction_curve(wave, targets.photsys))
        out[arm] = sed * mw * targets.fibre_fraction[i] / FLUX_UNIT
    return out


def _galaxy_sed(targets: Targets, i: int, wave: np.ndarray) -> np.ndarray:
    templates = load_templates()
    z = float(targets.z[i])
    rest = wave / (1 + z)
    cont = rest_continuum(templates, targets.coeffs[i], rest)
    cont = gaussian_filter1d(cont, LSF_SIGMA_ANGSTROM / 0.8, mode="nearest")
    lines = rest_lines(
        templates,
        targets.coeffs[i],
        rest,
        float(targets.sigma_kms[i]),
        LSF_SIGMA_ANGSTROM / (1 + z),
    )
    return (cont + lines) * distance_factor(np.array([z]))[0]


@dataclass(frozen=True)
class Observation:
    """Observed spectra per arm: flux/ivar (N, npix) float32, mask (N, npix) uint32."""

    flux: dict[str, np.ndarray]
    ivar: dict[str, np.ndarray]
    mask: dict[str, np.ndarray]


def observe(
    models: list[dict[str, np.ndarray]],
    rng: np.random.Generator,
    exptime_s: np.ndarray,
    bright: bool,
) -> Observation:
    """Add noise, sky residuals and masked pixels to noiseless ``models`` (one dict per target)."""
    n = len(models)
    sky = sky_model()
    flux, ivar, mask = {}, {}, {}
    sky_level = 2.5 if bright else 1.0  # moon and twilight raise the bright-time sky
    for arm in ARMS:
        wave = arm_wavelength(arm)
        cont, lines = sky[arm]
        model = np.stack([m[arm] for m in models]) if n else np.zeros((0, wave.size))
        background = sky_level * cont + lines  # (npix,)
        time = (exptime_s / 1000.0)[:, None]
        var = (background[None, :] + SOURCE_VARIANCE_1000S * np.clip(model, 0, None)) / (
            time * _throughput(wave)[None, :]
        )  # (N, npix)
        # The sky-line flux is proportional to its variance (photon noise), hence to ``lines``.
        residual = rng.normal(0, SKY_RESIDUAL_FRACTION, (n, 1)) * lines[None, :]
        f = model + rng.normal(size=model.shape) * np.sqrt(var) + residual
        iv = 1.0 / var
        m = np.zeros(model.shape, dtype=np.uint32)
        n_bad = rng.poisson(0.7, n)
        for row in np.flatnonzero(n_bad):
            for _ in range(n_bad[row]):
                start = rng.integers(0, wave.size - 6)
                m[row, start : start + rng.integers(1, 6)] = MASK_COSMIC
        bad = m != 0
        f[bad], iv[bad] = 0.0, 0.0
        flux[arm], ivar[arm], mask[arm] = f.astype(np.float32), iv.astype(np.float32), m
    return Observation(flux, ivar, mask)
