"""DESI spectra of the targets on the three arm grids: noiseless model, then an observation.

The model is the target's observed SED times its fibre fraction, in 1e-17 erg/s/cm^2/A, with
a Gaussian line-spread function of FWHM 1.8 A: emission lines (the galaxy's own nebular lines,
samplesky/nebular.py) are drawn analytically with the LSF width added in quadrature; the
continuum is convolved numerically.

An observation adds per-pixel Gaussian noise whose variance has the shape of real DESI coadds
(samplesky/noisemodel.py: a smooth per-arm shape with the steep arm ends and dichroic overlaps,
plus the sky-line spikes, all derived from the real ivar of the files in tests/data/desi), with
per-spectrum variations (sky brightness, colour tilt, sky-line strengths), plus the source's own
photon noise. It leaves sky-subtraction residuals at the sky lines (a random fraction of each
line's flux, calibrated on the residuals at 5577 A and the other lines of the real coadds) and
masks a few short pixel runs (mask bit set and ivar 0).

The noise level is calibrated per arm on a real EDR coadd (see :data:`DARK_SIGMA_1000S`): a
dark-time 1000 s sample-sky spectrum has the same median per-pixel sigma in each arm.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import sparse
from scipy.ndimage import gaussian_filter1d

from astroclip_core.formats.desi import ARMS, arm_wavelength
from astroclip_core.samplesky.noisemodel import shipped_noise_shape
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
# Sky-subtraction residuals: per spectrum and sky line, a Gaussian fraction (sd below) of the
# line's flux. The line flux follows from its photon variance (flux = variance * throughput /
# SOURCE_VARIANCE_1000S at 1000 s). 2% gives residual pulls at 5577 A and in the OH forest of the
# size measured in the real coadds (tests/test_samplesky_spectra_realism.py).
SKY_RESIDUAL_FRACTION = 0.02
# Per-spectrum variations of the noise shape (sd of natural logs unless said): sky brightness,
# a power-law colour tilt of the smooth part (sd of the index), sky-line strengths common to a
# spectrum and per line (OH bands vary independently through the night).
SKY_LEVEL_SD, SKY_TILT_SD, SKY_LINES_SD, SKY_LINE_EACH_SD = 0.1, 0.1, 0.2, 0.15
BRIGHT_SKY_FACTOR = 2.5  # moon and twilight raise the bright-time sky continuum


@dataclass(frozen=True)
class ArmNoise:
    """Noise ingredients of one arm on its grid (npix,) in 1000 s, dark sky.

    ``smooth_var``: smooth sky variance; ``line_var``: (npix, n_lines) variance of each sky line;
    ``line_flux``: (npix, n_lines) flux (1e-17 units) of each sky line. Both are sparse (a line
    covers a few pixels), so ``line_var @ weights.T`` costs little per spectrum.
    """

    smooth_var: np.ndarray
    line_var: sparse.csr_matrix
    line_flux: sparse.csr_matrix


@lru_cache(maxsize=1)
def sky_model() -> dict[str, ArmNoise]:
    """Per arm: the dark-sky noise ingredients from the shipped real-coadd noise shape, scaled
    so that the median per-pixel sigma is :data:`DARK_SIGMA_1000S` in 1000 s."""
    shapes = shipped_noise_shape()
    out = {}
    for arm in ARMS:
        wave = arm_wavelength(arm)
        shape = shapes[arm]
        smooth2 = shape.smooth_sigma(wave) ** 2  # (npix,)
        profiles = shape.line_profiles(wave)  # (n_lines, npix)
        line_rel = shape.line_excess[:, None] * profiles * smooth2[None, :]
        line_rel[profiles < 1e-6] = 0.0  # beyond ~5 sigma of each line
        k = (DARK_SIGMA_1000S[arm] / np.median(np.sqrt(smooth2 + line_rel.sum(axis=0)))) ** 2
        out[arm] = ArmNoise(
            smooth_var=k * smooth2,
            line_var=sparse.csr_matrix(k * line_rel.T),
            line_flux=sparse.csr_matrix(
                (k * line_rel * _throughput(wave)[None, :] / SOURCE_VARIANCE_1000S).T
            ),
        )
    return out


def _throughput(wave: np.ndarray) -> np.ndarray:
    """A smooth relative arm throughput, dropping towards the arm ends (source photon noise)."""
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
    return galaxy_sed(
        targets.coeffs[i],
        float(targets.z[i]),
        float(targets.sigma_kms[i]),
        targets.line_flux[i],
        wave,
    )


def galaxy_sed(
    coeffs: np.ndarray, z: float, sigma_kms: float, line_flux: np.ndarray, wave: np.ndarray
) -> np.ndarray:
    """Observed f_lambda (erg/s/cm^2/A, whole galaxy, no Milky Way dust) on ``wave`` with the
    DESI line-spread function: template mix ``coeffs`` (5,) plus nebular ``line_flux``
    (n_lines,) at redshift ``z``."""
    templates = load_templates()
    rest = wave / (1 + z)
    cont = rest_continuum(templates, coeffs, rest)
    cont = gaussian_filter1d(cont, LSF_SIGMA_ANGSTROM / 0.8, mode="nearest")
    lines = rest_lines(line_flux, rest, sigma_kms, LSF_SIGMA_ANGSTROM / (1 + z))
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
    time = (np.asarray(exptime_s, dtype=np.float64) / 1000.0)[:, None]  # (N, 1)
    # Per-spectrum sky variations (the same in the three arms of a spectrum).
    level = np.exp(rng.normal(0, SKY_LEVEL_SD, (n, 1))) * (BRIGHT_SKY_FACTOR if bright else 1.0)
    tilt = rng.normal(0, SKY_TILT_SD, (n, 1))
    lines_common = np.exp(rng.normal(0, SKY_LINES_SD, (n, 1)))
    for arm in ARMS:
        wave = arm_wavelength(arm)
        noise = sky[arm]
        n_lines = noise.line_var.shape[1]
        model = np.stack([m[arm] for m in models]) if n else np.zeros((0, wave.size))
        line_scale = lines_common * np.exp(rng.normal(0, SKY_LINE_EACH_SD, (n, n_lines)))
        smooth = level * noise.smooth_var[None, :] * (wave / 6500.0)[None, :] ** tilt  # (N, npix)
        background = smooth + (noise.line_var @ line_scale.T).T  # (N, npix) variance in 1000 s
        var = (
            background + SOURCE_VARIANCE_1000S * np.clip(model, 0, None) / _throughput(wave)
        ) / time
        residual_weight = line_scale * rng.normal(0, SKY_RESIDUAL_FRACTION, (n, n_lines))
        residual = (noise.line_flux @ residual_weight.T).T  # (N, npix)
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
