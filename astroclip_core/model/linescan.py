"""A fixed redshift scan of a spectrum: matched-filter responses of known lines at trial z.

For each trial redshift z_k (``n_z`` of them, evenly spaced in ln(1 + z) up to
``lnz_max``) and each channel c, the response is the dot product of the standardised spectrum
with one kernel (a column of :func:`line_scan_matrix`):

- line channels: for every line of the channel, a narrow Gaussian at the observed
  wavelength lambda_rest (1 + z_k) minus a broad one with the same sum over the spectrum's
  pixels. The kernel sums to zero (also where the grid's end cuts it),
  so a smooth continuum gives ~0, an emission line a positive response and an absorption line a
  negative one; absorption channels carry a minus sign, so their features respond positively.
- the 4000 A break: the mean over 4000-4100 A minus the mean over 3850-3950 A (rest frame,
  the narrow D4000 windows), shifted to z_k.

Every column is scaled to unit L2 norm, so for white noise of unit std (the standardised
spectrum's units) each response has unit std: the responses read as signal-to-noise.

This is what a template redshift fitter computes, reduced to a few line groups. It uses only
rest-frame physics (vacuum wavelengths), no redshift labels; the spectrum encoder turns the
(n_z, channels) map into tokens, so finding a line's redshift costs the transformer one
attention lookup instead of being learned from slices.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# (name, rest-frame vacuum wavelengths in A, sign): +1 emission, -1 absorption.
LINE_GROUPS: tuple[tuple[str, tuple[float, ...], int], ...] = (
    ("[O II]", (3728.48,), +1),  # the 3727.09/3729.88 doublet, unresolved at the scan's width
    ("H beta + [O III]", (4862.68, 4960.30, 5008.24), +1),
    ("H alpha + [N II] + [S II]", (6564.61, 6585.27, 6718.29, 6732.67), +1),
    ("H delta + H gamma absorption", (4102.89, 4341.69), -1),
    ("Ca K + Ca H", (3934.78, 3969.59), -1),
    ("Mg b + Na D", (5176.7, 5895.6), -1),
)
D4000_BLUE_ANGSTROM = (3850.0, 3950.0)
D4000_RED_ANGSTROM = (4000.0, 4100.0)
N_CHANNELS = len(LINE_GROUPS) + 1  # the line groups and the 4000 A break

# Kernel widths in ln(lambda): the narrow Gaussian's sigma (0.004, ~20 A at 5000 A) is about
# half the default trial-z step in ln(1 + z) (0.01), so a line between two trial redshifts
# still responds in both; the broad one (0.02, ~100 A) estimates the local continuum.
NARROW_SIGMA_LN = 0.004
BROAD_SIGMA_LN = 0.02


def trial_ln1pz(n_z: int, lnz_max: float) -> np.ndarray:
    """(n_z,) trial ln(1 + z): the centres of ``n_z`` equal bins over [0, lnz_max]."""
    return (np.arange(n_z) + 0.5) * lnz_max / n_z


def _gaussian(u: np.ndarray, centre: np.ndarray, sigma: float) -> np.ndarray:
    # (L, K) unit-area Gaussians in ln(lambda)
    return np.exp(-0.5 * ((u[:, None] - centre[None, :]) / sigma) ** 2) / (
        sigma * math.sqrt(2 * math.pi)
    )


def line_scan_matrix(wave_angstrom: np.ndarray, n_z: int, lnz_max: float) -> torch.Tensor:
    """(L, n_z * N_CHANNELS) float32 kernels; column k * N_CHANNELS + c is trial z_k, channel c.

    ``wave_angstrom`` (L,) is the spectrum's wavelength grid. Kernels that fall mostly outside
    it are all zero (their response is 0); the others have unit L2 norm.
    """
    u = np.log(np.asarray(wave_angstrom, dtype=np.float64))  # (L,)
    lnz = trial_ln1pz(n_z, lnz_max)  # (n_z,)
    out = np.zeros((len(u), n_z, N_CHANNELS))
    for c, (_name, lines, sign) in enumerate(LINE_GROUPS):
        for rest in lines:
            centre = math.log(rest) + lnz
            narrow = _gaussian(u, centre, NARROW_SIGMA_LN)  # (L, n_z)
            broad = _gaussian(u, centre, BROAD_SIGMA_LN)
            # Scale the broad one to the narrow one's sum on the grid: zero-sum even where the
            # grid's end cuts the kernel, so a smooth continuum never responds.
            ratio = narrow.sum(axis=0) / np.maximum(broad.sum(axis=0), 1e-300)
            out[:, :, c] += sign * (narrow - ratio * broad)
    for k, z in enumerate(lnz):
        red = (u > math.log(D4000_RED_ANGSTROM[0]) + z) & (u < math.log(D4000_RED_ANGSTROM[1]) + z)
        blue = (u > math.log(D4000_BLUE_ANGSTROM[0]) + z) & (
            u < math.log(D4000_BLUE_ANGSTROM[1]) + z
        )
        if red.any() and blue.any():
            out[red, k, -1] = 1.0 / red.sum()
            out[blue, k, -1] = -1.0 / blue.sum()
    norm = np.linalg.norm(out, axis=0, keepdims=True)  # (1, n_z, C)
    # A kernel mostly off the grid (a line just past either end) would, once scaled up to unit
    # norm, amplify the last few pixels: keep only columns with at least half their channel's
    # largest norm, i.e. most of the kernel on the grid.
    keep = norm >= 0.5 * norm.max(axis=1, keepdims=True)
    out = np.where(keep, out / np.where(keep, norm, 1.0), 0.0)
    return torch.tensor(out.reshape(len(u), n_z * N_CHANNELS), dtype=torch.float32)
