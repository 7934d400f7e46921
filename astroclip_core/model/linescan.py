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

:func:`fine_line_scan` computes the same (n_z, channels) map with line-width kernels on a finer
redshift grid (``SpectrumEncoderConfig.line_scan_mode = "fine"``); see the notes above it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

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


# The fine scan (``SpectrumEncoderConfig.line_scan_mode = "fine"``). The matrix scan's kernels
# are ~30 A wide (sigma 0.004 in ln lambda) so that n_z = 96 trial redshifts cover every
# redshift; a DESI emission line is ~2-3 A wide (sigma), so such a kernel keeps only ~40% of a
# line's S/N, and noise and sky residuals across its width compete with the line. The fine scan
# instead uses line-width kernels on a grid FINE_OVERSAMPLE times finer in ln(1 + z) and keeps,
# for each of the n_z coarse bins, the strongest response inside it (the smooth 4000 A break is
# read at the bin's centre), so its (n_z, channels) map has the same shape as the matrix scan's.
FINE_OVERSAMPLE = 24
FINE_SIGMA_LN = 0.0006  # ~4.5 A at 7500 A: a resolved line plus the [O II] doublet's spread
FINE_LINE_WINDOW_PIX = 101  # ~80 A running mean taken off before the line kernels


def fine_log_grid(
    wave_angstrom: np.ndarray, n_z: int, lnz_max: float
) -> tuple[float, int, torch.Tensor]:
    """The fine scan's even ln(lambda) grid: (step in ln lambda, number of its pixels,
    (n_log + 1,) float64 fractional input-pixel positions of its bin edges).

    The step is the fine trial-z step, lnz_max / (n_z x FINE_OVERSAMPLE), so a trial redshift
    shifts a line by a whole number of grid pixels.
    """
    step = lnz_max / (n_z * FINE_OVERSAMPLE)
    lo, hi = math.log(wave_angstrom[0]), math.log(wave_angstrom[-1])
    n_log = int((hi - lo) / step)
    edges = np.exp(lo + step * np.arange(n_log + 1))  # (n_log + 1,) A
    pix = np.interp(edges, wave_angstrom, np.arange(len(wave_angstrom), dtype=np.float64))
    return step, n_log, torch.tensor(pix, dtype=torch.float64)


def _bin_means(x: torch.Tensor, edges_pix: torch.Tensor) -> torch.Tensor:
    """(B, L) -> (B, n_log): mean of x over each fine bin, from its interpolated cumulative sum
    (every input pixel counts once, so no S/N is lost where bins hold several pixels)."""
    c = F.pad(x.double().cumsum(dim=1), (1, 0))  # (B, L + 1), c[:, j] = sum of first j pixels
    lo = edges_pix.floor().long().clamp(max=x.shape[1] - 1)
    frac = edges_pix - lo
    at = c[:, lo] + (c[:, lo + 1] - c[:, lo]) * frac  # (B, n_log + 1) cumulative sum at edges
    width = (edges_pix[1:] - edges_pix[:-1]).clamp_min(1e-9)  # (n_log,) input pixels per bin
    return ((at[:, 1:] - at[:, :-1]) / width).float()


def fine_line_scan(
    x: torch.Tensor,
    valid: torch.Tensor,
    wave_angstrom: np.ndarray,
    n_z: int,
    lnz_max: float,
    grid: tuple[float, int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """(B, L) standardised, weighted spectrum (0 at invalid pixels) and its (B, L) valid mask
    -> (B, n_z * N_CHANNELS) fine-scan responses, trial z major like the matrix scan.

    Line channels: the spectrum less its ~80 A running mean, averaged into the fine ln(lambda)
    bins and smoothed by a unit-L2 Gaussian of sigma FINE_SIGMA_LN, read at each line's
    observed position for every fine trial z, summed over the channel's lines on the grid and
    divided by the square root of their number (signed as in LINE_GROUPS); then the maximum
    over the FINE_OVERSAMPLE fine steps of each coarse bin. The 4000 A break: the mean over
    4000-4100 A minus the mean over 3850-3950 A (rest frame) of the whole standardised
    spectrum, at each coarse bin's centre. ``grid`` is :func:`fine_log_grid` of the same
    arguments, computed once by a caller that scans every step (the encoder keeps it).
    """
    from astroclip_core.model.spectrum import running_continuum  # spectrum.py imports this

    step, n_log, edges = grid or fine_log_grid(wave_angstrom, n_z, lnz_max)
    edges = edges.to(x.device)
    mask = valid.to(x.dtype)
    residual = (x - running_continuum(x, mask, FINE_LINE_WINDOW_PIX)) * mask
    lines_log = _bin_means(residual, edges)  # (B, n_log)
    half = int(math.ceil(4 * FINE_SIGMA_LN / step))
    taps = torch.arange(-half, half + 1, dtype=torch.float32, device=x.device) * step
    kernel = torch.exp(-0.5 * (taps / FINE_SIGMA_LN) ** 2)
    kernel = kernel / kernel.norm()
    # (B, n_log): the Gaussian smoothing as windows times taps (a 1-channel conv1d is ~2x slower)
    smooth = F.pad(lines_log, (half, half)).unfold(1, 2 * half + 1, 1) @ kernel
    n_fine = n_z * FINE_OVERSAMPLE
    u0 = math.log(wave_angstrom[0])
    # fine trial k puts a line at log pixel first + k; first < 0 is blueward of the grid
    firsts = {
        rest: int(math.floor((math.log(rest) - u0) / step)) for _, g, _ in LINE_GROUPS for rest in g
    }
    left = max(0, -min(firsts.values()))
    # (B, left + n_log + n_fine): zeros beyond both ends, so a line off the grid reads 0
    padded = F.pad(smooth, (left, n_fine))
    k = np.arange(n_fine)
    channels = []
    for _name, lines, sign in LINE_GROUPS:
        total = torch.zeros(len(x), n_fine, dtype=x.dtype, device=x.device)
        count = np.zeros(n_fine)
        for rest in lines:
            start = left + firsts[rest]
            total = total + padded[:, start : start + n_fine]  # (B, n_fine), a view
            count += (firsts[rest] + k >= 0) & (firsts[rest] + k < n_log)
        scale = torch.tensor(sign / np.sqrt(np.maximum(count, 1.0)), dtype=x.dtype, device=x.device)
        channels.append((total * scale).view(len(x), n_z, FINE_OVERSAMPLE).amax(dim=2))  # (B, n_z)
    channels.append(_fine_break(x, edges, step, n_log, n_z, u0))
    return torch.stack(channels, dim=2).reshape(len(x), n_z * N_CHANNELS)


def _fine_break(
    x: torch.Tensor, edges: torch.Tensor, step: float, n_log: int, n_z: int, u0: float
) -> torch.Tensor:
    """(B, n_z) 4000 A break of the standardised spectrum at each coarse trial z (0 where a
    window leaves the grid): red-window mean minus blue-window mean on the fine log grid, the
    windows placed at the coarse bin's centre (the break is smooth across a bin)."""
    cont = _bin_means(x, edges)  # (B, n_log)
    c = F.pad(cont.cumsum(dim=1), (1, 0))  # (B, n_log + 1)
    # coarse bin centres in fine steps: FINE_OVERSAMPLE * (k + 1/2)
    centre = FINE_OVERSAMPLE * (np.arange(n_z) + 0.5)

    def window_mean(window: tuple[float, float]) -> tuple[torch.Tensor, np.ndarray]:
        lo = np.round((math.log(window[0]) - u0) / step + centre).astype(np.int64)
        hi = np.round((math.log(window[1]) - u0) / step + centre).astype(np.int64)
        on = (lo >= 0) & (hi <= n_log)
        lo_c, hi_c = np.clip(lo, 0, n_log), np.clip(hi, 0, n_log)
        width = torch.tensor(np.maximum(hi_c - lo_c, 1), dtype=x.dtype, device=x.device)
        return (c[:, hi_c] - c[:, lo_c]) / width, on

    red, red_on = window_mean(D4000_RED_ANGSTROM)
    blue, blue_on = window_mean(D4000_BLUE_ANGSTROM)
    on = torch.tensor(red_on & blue_on, device=x.device)
    return torch.where(on, red - blue, 0.0)  # (B, n_z)
