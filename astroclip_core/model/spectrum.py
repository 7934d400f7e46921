"""The spectrum encoder: per-spectrum standardisation, overlapping slices, a transformer.

Each spectrum is standardised by the mean and std of its *valid* pixels (mask == 0 and
ivar > 0); invalid pixels are then set to 0, i.e. to the spectrum's own mean, so they carry no
signal. The two removed numbers (log std, mean / std) go into one extra token at position 0,
so the encoder still knows the spectrum's amplitude.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from astroclip_core.model.blocks import Transformer
from astroclip_core.model.config import SpectrumEncoderConfig
from astroclip_core.model.linescan import (
    N_CHANNELS,
    fine_line_scan,
    fine_log_grid,
    line_scan_matrix,
)

_MIN_STD = 1e-6  # floor on a spectrum's std so a flat/empty spectrum does not divide by zero


def standardise(flux: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardise each spectrum over its valid pixels.

    flux (B, L) float, valid (B, L) bool -> (standardised (B, L) with 0 at invalid pixels,
    stats (B, 2) = (log std, mean / std)).
    """
    w = valid.to(flux.dtype)
    n = w.sum(dim=1, keepdim=True).clamp_min(1.0)  # (B, 1)
    mean = (flux * w).sum(dim=1, keepdim=True) / n
    var = (((flux - mean) * w) ** 2).sum(dim=1, keepdim=True) / n
    std = var.sqrt().clamp_min(_MIN_STD)
    x = (flux - mean) / std * w
    stats = torch.cat([std.log(), mean / std], dim=1)  # (B, 2)
    return x, stats


def pixel_weights(
    valid: torch.Tensor, ivar: torch.Tensor | None, how: str
) -> torch.Tensor:  # (B, L) float32 in [0, 1]
    """Per-pixel weights of (B, L) ``valid`` (bool) under ``SpectrumEncoderConfig.pixel_weight``.

    "valid": valid as 0/1. "ivar": valid x min(1, sqrt(ivar / m)), m the row's median ivar over
    valid pixels; needs ``ivar`` (B, L). Raises ValueError when "ivar" gets no ivar.
    """
    w = valid.float()
    if how == "valid":
        return w
    if ivar is None:
        raise ValueError(
            "this spectrum encoder weighs pixels by ivar (pixel_weight='ivar'): pass ivar"
        )
    ivar = ivar.float().clamp_min(0.0)
    typical = torch.where(valid, ivar, torch.nan).nanmedian(dim=1, keepdim=True).values  # (B, 1)
    typical = typical.nan_to_num(1.0).clamp_min(1e-30)
    return w * (ivar / typical).sqrt().clamp(max=1.0)


def running_continuum(flux: torch.Tensor, weight: torch.Tensor, window_pix: int) -> torch.Tensor:
    """(B, L) weighted running mean of (B, L) ``flux`` over ``window_pix`` (odd) pixels.

    Each pixel's mean is sum(w f) / sum(w) over the window centred on it (cut at the ends);
    where the window holds no weight the result is 0. Cumulative sums, O(L) per spectrum, of
    the flux less its row mean (smaller sums lose less to float32 rounding).
    """
    half = window_pix // 2
    length = flux.shape[1]
    offset = flux.mean(dim=1, keepdim=True)  # (B, 1)

    def window_sums(values: torch.Tensor) -> torch.Tensor:
        c = F.pad(values.cumsum(dim=1), (1, 0))  # (B, L + 1), c[:, j] = sum of the first j
        # ends repeated: pixel i's window is c[i + half + 1] - c[i - half], clamped to [0, L]
        c = torch.cat([c[:, :1].expand(-1, half), c, c[:, -1:].expand(-1, half)], dim=1)
        return c[:, 2 * half + 1 : 2 * half + 1 + length] - c[:, :length]  # (B, L)

    num = window_sums((flux - offset) * weight)
    den = window_sums(weight)
    return torch.where(den > 1e-6, num / den.clamp_min(1e-6) + offset, 0.0)


# Angular frequencies (per unit ln lambda) of the fixed encoding: from 1 (the whole 3600-9824 A
# range is ~1 in ln lambda) to 3000 (a 0.0003 shift, ~1 A, turns the finest pair by ~1 rad).
LOGLAMBDA_OMEGA_RANGE = (1.0, 3000.0)


def loglambda_resampling(config: SpectrumEncoderConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear interpolation from the 0.8 A grid onto the even ln(lambda) grid.

    Returns (index (L,) int64, weight (L,) float32): output pixel j is
    ``x[index[j]] * (1 - weight[j]) + x[index[j] + 1] * weight[j]``.
    """
    if config.grid != "loglambda":
        raise ValueError(f"loglambda_resampling needs grid='loglambda', got {config.grid!r}")
    ln_grid = np.arange(config.n_wavelength) * config.ln_lambda_step  # ln(lambda / lambda_min)
    # Fractional input pixel of each output wavelength: lambda = lambda_min * exp(ln_grid).
    pos = np.expm1(ln_grid) * config.wave_min_angstrom / config.wave_step_angstrom
    index = np.clip(np.floor(pos).astype(np.int64), 0, config.n_wavelength - 2)
    weight = np.clip(pos - index, 0.0, 1.0)
    return torch.tensor(index), torch.tensor(weight, dtype=torch.float32)


def loglambda_encoding(config: SpectrumEncoderConfig) -> torch.Tensor:
    """(1, 1 + n_slices, width) fixed position encoding: sin/cos of each slice's ln(lambda).

    Row 0 (the statistics token) is zero; row 1 + j encodes the centre wavelength of slice j
    on the sliced grid (``config.grid``), ln(lambda / lambda_min) times ``width // 2``
    log-spaced frequencies.
    """
    centre_pix = np.arange(config.n_slices) * config.stride_pix + (config.slice_pix - 1) / 2
    if config.grid == "loglambda":  # even in ln(lambda): the padding continues the same step
        ln_lambda = torch.tensor(centre_pix * config.ln_lambda_step)
    else:
        ln_lambda = torch.tensor(
            np.log1p(centre_pix * config.wave_step_angstrom / config.wave_min_angstrom)
        )
    lo, hi = LOGLAMBDA_OMEGA_RANGE
    omega = torch.logspace(math.log10(lo), math.log10(hi), config.width // 2, dtype=torch.float64)
    angle = ln_lambda[:, None] * omega[None, :]  # (n_slices, width // 2) radians
    table = torch.zeros(1 + config.n_slices, config.width, dtype=torch.float64)
    table[1:, : config.width // 2] = angle.sin()
    table[1:, config.width // 2 : 2 * (config.width // 2)] = angle.cos()
    return table.float().unsqueeze(0)


def wavelength_angstrom(config: SpectrumEncoderConfig) -> np.ndarray:
    """(n_wavelength,) the input grid in Angstrom: wave_min + wave_step x pixel."""
    return config.wave_min_angstrom + config.wave_step_angstrom * np.arange(config.n_wavelength)


class SpectrumEncoder(nn.Module):
    """(B, L) flux and (B, L) valid mask -> (B, 1 + n_slices [+ line_scan_tokens]
    [+ 1 continuum token], width) tokens.

    With ``line_scan_tokens`` > 0 the line-scan map (:meth:`line_scan`, (B, n_z, channels)) is
    cut into that many groups of neighbouring trial redshifts, each one token (a linear embedding
    plus a learned position), appended after the slice tokens.
    """

    def __init__(self, config: SpectrumEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.slice_embed = nn.Linear(config.slice_pix, config.width)
        self.stats_embed = nn.Linear(2, config.width)
        if config.position == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.n_slices, config.width))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.register_buffer("pos_embed", loglambda_encoding(config), persistent=False)
        if config.grid == "loglambda":
            index, weight = loglambda_resampling(config)
            self.register_buffer("resample_index", index, persistent=False)
            self.register_buffer("resample_weight", weight, persistent=False)
        if config.line_scan_n_z and config.line_scan_mode == "fine":
            step, n_log, edges = fine_log_grid(
                wavelength_angstrom(config), config.line_scan_n_z, config.line_scan_lnz_max
            )
            self._fine_step_ln, self._fine_n_log = step, n_log
            self.register_buffer("fine_scan_edges", edges, persistent=False)
        if config.line_scan_n_z and config.line_scan_mode == "matrix":
            matrix = line_scan_matrix(
                wavelength_angstrom(config), config.line_scan_n_z, config.line_scan_lnz_max
            )  # (L, n_z * N_CHANNELS), fixed
            self.register_buffer("line_scan_kernels", matrix, persistent=False)
        if config.line_scan_tokens:
            per_token = config.line_scan_n_z // config.line_scan_tokens * N_CHANNELS
            self.scan_embed = nn.Linear(per_token, config.width)
            self.scan_pos_embed = nn.Parameter(
                torch.zeros(1, config.line_scan_tokens, config.width)
            )
            nn.init.trunc_normal_(self.scan_pos_embed, std=0.02)
        if config.continuum_bins:
            self.continuum_embed = nn.Linear(config.continuum_bins, config.width)
            self.continuum_pos_embed = nn.Parameter(torch.zeros(1, 1, config.width))
            nn.init.trunc_normal_(self.continuum_pos_embed, std=0.02)
        self.transformer = Transformer(config.width, config.depth, config.n_heads, config.mlp_ratio)

    def line_scan(
        self, flux: torch.Tensor, valid: torch.Tensor, ivar: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L) flux and valid (and ivar) -> (B, n_z * N_CHANNELS) line-scan responses
        (trial z major).

        The responses are in units of the standardised spectrum's std (S/N-like for white
        noise); see :mod:`astroclip_core.model.linescan`. ``ivar`` is needed with
        ``pixel_weight="ivar"``.
        """
        if not self.config.line_scan_n_z:
            raise ValueError("this spectrum encoder has no line scan (line_scan_n_z = 0)")
        weight = pixel_weights(valid, ivar, self.config.pixel_weight)
        x, _ = standardise(flux.float(), weight)
        return self._scan(x, weight)

    def _scan(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # (B, L) standardised spectrum and its pixel weights -> (B, n_z * N_CHANNELS)
        cfg = self.config
        if cfg.line_scan_mode == "fine":
            grid = (self._fine_step_ln, self._fine_n_log, self.fine_scan_edges)
            return fine_line_scan(
                x,
                weight > 0,
                wavelength_angstrom(cfg),
                cfg.line_scan_n_z,
                cfg.line_scan_lnz_max,
                grid,
            )
        return x @ self.line_scan_kernels

    def forward(
        self, flux: torch.Tensor, valid: torch.Tensor, ivar: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encode spectra on the ``n_wavelength`` grid (flux in any linear unit); ``ivar``
        (B, L) is needed with ``pixel_weight="ivar"`` and ignored otherwise."""
        cfg = self.config
        if flux.ndim != 2 or flux.shape[1] != cfg.n_wavelength or valid.shape != flux.shape:
            raise ValueError(
                f"flux and valid must both be (B, {cfg.n_wavelength}), "
                f"got {tuple(flux.shape)} and {tuple(valid.shape)}"
            )
        flux = flux.float()
        weight = pixel_weights(valid, ivar, cfg.pixel_weight)  # (B, L)
        x, raw_stats = standardise(flux, weight)
        stats = raw_stats
        if cfg.stats_token == "none":
            stats = torch.zeros_like(stats)  # (B, 2): no flux level, no continuum S/N
        scan_tokens = None
        if cfg.line_scan_tokens:
            groups = self._scan(x, weight).view(len(x), cfg.line_scan_tokens, -1)
            scan_tokens = self.scan_embed(groups) + self.scan_pos_embed  # (B, T_scan, C)
        continuum_token = None
        if cfg.continuum_window_pix:
            # the slices see the features alone; the stats and the scan keep the whole spectrum
            smooth = running_continuum(flux, weight, cfg.continuum_window_pix)  # (B, L)
            x, _ = standardise(flux - smooth, weight)
            if cfg.continuum_bins:
                std = raw_stats[:, :1].exp()  # (B, 1)
                standardised = (smooth - raw_stats[:, 1:] * std) / std  # (B, L), shape only
                coarse = F.adaptive_avg_pool1d(standardised[:, None], cfg.continuum_bins)[:, 0]
                continuum_token = self.continuum_embed(coarse)[:, None] + self.continuum_pos_embed
        if cfg.grid == "loglambda":
            # Invalid pixels are 0 (the mean) already, so they interpolate to the mean too.
            i, w = self.resample_index, self.resample_weight
            x = x[:, i] * (1 - w) + x[:, i + 1] * w  # (B, L) on the ln(lambda) grid
        x = F.pad(x, (0, cfg.padded_length - cfg.n_wavelength))  # (B, L_pad), zeros = mean
        slices = x.unfold(1, cfg.slice_pix, cfg.stride_pix)  # (B, n_slices, slice_pix)
        tokens = torch.cat(
            [self.stats_embed(stats).unsqueeze(1), self.slice_embed(slices)], dim=1
        )  # (B, 1 + n_slices, C)
        tokens = tokens + self.pos_embed
        if scan_tokens is not None:
            tokens = torch.cat([tokens, scan_tokens], dim=1)  # (B, 1 + n_slices + T_scan, C)
        if continuum_token is not None:
            tokens = torch.cat([tokens, continuum_token], dim=1)  # (B, ... + 1, C)
        return self.transformer(tokens)
