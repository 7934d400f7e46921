"""Spectra onto the model's grid: :data:`~astroclip_core.formats.desi.WAVELENGTH` (7781 pixels,
3600–9824 Å at 0.8 Å).

A DESI coadd whose B/R/Z arms lie on the DESI arm grids is merged exactly as
``desispec.coaddition.coadd_cameras`` does (:func:`astroclip_core.formats.desi.read_coadd_arrays`).
Anything else "can be resampled" when its wavelengths are finite and strictly increasing and
cover at least :data:`MIN_COVERAGE` of the grid: flux and inverse variance are interpolated
linearly onto the grid (ivar scaled by the ratio of pixel widths, so that the noise per Å is
kept), pixels outside the spectrum's range get ivar 0, and arms are combined by inverse
variance. Every function says which of these it did (:class:`GridNote`), and refuses
with a :class:`FormatError` naming the source and the problem otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astroclip_core.errors import FormatError
from astroclip_core.formats._fits import open_fits, read_hdu, table_to_arrow
from astroclip_core.formats.desi import (
    ARMS,
    GRID_TOLERANCE_ANGSTROM,
    N_WAVELENGTH,
    WAVELENGTH,
    WAVELENGTH_STEP_ANGSTROM,
    CoaddArrays,
    arm_wavelength,
    read_coadd_arrays,
    require_fibermap,
)

MIN_COVERAGE = 0.5  # a spectrum must cover half the grid's wavelength range to be resampled
GRID_TEXT = f"the {N_WAVELENGTH}-pixel grid (3600–9824 Å at {WAVELENGTH_STEP_ANGSTROM} Å)"


@dataclass(frozen=True)
class GridNote:
    """How spectra reached the grid: ``"on-grid"``, ``"merged"`` (DESI arms, exact merge) or
    ``"resampled"``; ``text`` says it in words for logs and messages."""

    how: str
    text: str


def _describe(wave: np.ndarray) -> str:
    return f"{wave.size} pixels {wave[0]:.1f}–{wave[-1]:.1f} Å" if wave.size else "no pixels"


def resample_to_grid(
    wave: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray | None = None,
    source: object = "<array>",
    min_coverage: float = MIN_COVERAGE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, GridNote]:
    """(N, L) spectra on wavelengths ``wave`` (L,) Å -> flux, ivar (float32) and mask (uint32,
    nonzero = bad), each (N, 7781) on the grid, and the note of what was done.

    Spectra already on the grid are returned as they are. Raises FormatError naming
    ``source`` when the wavelengths are not finite and increasing, or cover less than
    ``min_coverage`` of the grid (none of it, with 0: one arm of several).
    """
    wave = np.asarray(wave, dtype=np.float64)
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    ivar = np.atleast_2d(np.asarray(ivar, dtype=np.float64))
    mask = np.zeros(flux.shape, np.uint32) if mask is None else np.atleast_2d(mask)
    if wave.ndim != 1 or flux.shape[-1] != wave.size or ivar.shape != flux.shape:
        raise FormatError(
            source,
            f"spectrum shapes do not agree: wavelength {wave.shape}, flux {flux.shape}, "
            f"ivar {ivar.shape}",
        )
    if mask.shape != flux.shape:
        raise FormatError(source, f"mask has shape {mask.shape}, flux {flux.shape}")
    if wave.size == N_WAVELENGTH and np.allclose(
        wave, WAVELENGTH, rtol=0, atol=GRID_TOLERANCE_ANGSTROM
    ):
        note = GridNote("on-grid", f"already on {GRID_TEXT}")
        return flux.astype(np.float32), ivar.astype(np.float32), mask.astype(np.uint32), note
    if wave.size < 2 or not np.isfinite(wave).all() or (np.diff(wave) <= 0).any():
        raise FormatError(
            source,
            f"spectrum off {GRID_TEXT} and it cannot be resampled: its wavelengths "
            f"({_describe(wave)}) are not finite and strictly increasing",
        )
    lo, hi = max(wave[0], WAVELENGTH[0]), min(wave[-1], WAVELENGTH[-1])
    coverage = max(hi - lo, 0.0) / (WAVELENGTH[-1] - WAVELENGTH[0])
    if coverage < min_coverage or coverage == 0:
        raise FormatError(
            source,
            f"spectrum off {GRID_TEXT} and it cannot be resampled: its {_describe(wave)} "
            f"cover {coverage:.0%} of the grid (more than {min_coverage:.0%} needed)",
        )
    out_flux, out_ivar = _interpolate(wave, flux, ivar, mask)
    out_mask = (out_ivar <= 0).astype(np.uint32)
    note = GridNote(
        "resampled",
        f"resampled from {_describe(wave)} onto {GRID_TEXT} by linear interpolation "
        f"({coverage:.0%} of the grid covered)",
    )
    return out_flux, out_ivar, out_mask, note


def _interpolate(
    wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of (N, L) flux and ivar onto WAVELENGTH; (N, 7781) float32 each.

    A grid pixel is bad (ivar 0) outside [wave[0], wave[-1]] and where either neighbouring
    input pixel is bad (ivar <= 0 or masked), so bad input never leaks into good output.
    """
    inside = (wave[0] <= WAVELENGTH) & (wave[-1] >= WAVELENGTH)
    right = np.clip(np.searchsorted(wave, WAVELENGTH, side="left"), 1, wave.size - 1)
    left = right - 1
    frac = (WAVELENGTH - wave[left]) / (wave[right] - wave[left])  # (7781,)
    good = (ivar > 0) & (mask == 0)  # (N, L)
    both = good[:, left] & good[:, right] & inside  # (N, 7781)
    out_flux = (1 - frac) * flux[:, left] + frac * flux[:, right]
    # ivar per native pixel -> per grid pixel: variance per Å is kept, so ivar scales with
    # the pixel width ratio (0.8 Å / native width).
    native_step = np.gradient(wave)
    width_ratio = WAVELENGTH_STEP_ANGSTROM / (
        (1 - frac) * native_step[left] + frac * native_step[right]
    )
    out_ivar = ((1 - frac) * ivar[:, left] + frac * ivar[:, right]) * width_ratio
    out_flux = np.where(both, out_flux, 0.0).astype(np.float32)
    out_ivar = np.where(both, out_ivar, 0.0).astype(np.float32)
    return out_flux, out_ivar


def coadd_on_desi_grid(path: str | Path) -> bool:
    """True when every B/R/Z arm of the coadd at ``path`` lies on its DESI arm grid."""
    with open_fits(path) as fits:
        require_fibermap(fits, path)
        for arm in ARMS:
            name = f"{arm}_WAVELENGTH"
            if name not in fits:
                raise FormatError(path, f"missing HDU {name!r}: the {arm} arm has no wavelengths")
            wave = read_hdu(path, name, fits[name].read)
            expected = arm_wavelength(arm)
            if wave.shape != expected.shape or not np.allclose(
                wave, expected, rtol=0, atol=GRID_TOLERANCE_ANGSTROM
            ):
                return False
    return True


def read_coadd_on_grid(
    path: str | Path, targetids: list[int] | None = None
) -> tuple[CoaddArrays, GridNote]:
    """A DESI coadd's spectra on the grid, and how they got there.

    Arms on the DESI grids are merged exactly (:func:`read_coadd_arrays`). Arms on other grids
    are each resampled (:func:`resample_to_grid`) and combined by inverse variance; an arm
    that cannot be resampled raises FormatError naming the file, the arm and why. A file with
    no FIBERMAP is refused (:func:`~astroclip_core.formats.desi.require_fibermap`).
    """
    if coadd_on_desi_grid(path):
        note = GridNote(
            "merged",
            f"arms {', '.join(ARMS)} merged onto {GRID_TEXT} (desispec coadd_cameras rule)",
        )
        return read_coadd_arrays(path, targetids), note
    with open_fits(path) as fits:
        fibermap = read_hdu(path, "FIBERMAP", fits["FIBERMAP"].read)
        ids = np.asarray(fibermap["TARGETID"], dtype=np.int64)
        rows = np.arange(ids.size)
        if targetids is not None:
            wanted = np.unique(np.asarray(targetids, dtype=np.int64))
            rows = np.flatnonzero(np.isin(ids, wanted))
            missing = np.setdiff1d(wanted, ids[rows])
            if missing.size:
                raise KeyError(f"{path}: TARGETID(s) not in FIBERMAP: {missing[:10].tolist()}")
        weighted = np.zeros((rows.size, N_WAVELENGTH))
        ivar_sum = np.zeros((rows.size, N_WAVELENGTH))
        texts = []
        covered = np.zeros(N_WAVELENGTH, bool)  # grid pixels inside some arm's range
        for arm in ARMS:
            parts = {}
            for kind in ("WAVELENGTH", "FLUX", "IVAR", "MASK"):
                name = f"{arm}_{kind}"
                if name in fits:
                    parts[kind] = read_hdu(path, name, fits[name].read)
                elif kind != "MASK":
                    raise FormatError(path, f"missing HDU {name!r}")
            mask = parts["MASK"][rows] if "MASK" in parts else None
            # each arm covers part of the grid; the arms together must cover enough
            flux, ivar, _, note = resample_to_grid(
                parts["WAVELENGTH"], parts["FLUX"][rows], parts["IVAR"][rows], mask,
                f"{path} ({arm} arm)", min_coverage=0.0,
            )  # fmt: skip
            wave = np.asarray(parts["WAVELENGTH"], dtype=np.float64)
            covered |= (wave[0] <= WAVELENGTH) & (wave[-1] >= WAVELENGTH)
            weighted += ivar.astype(np.float64) * flux
            ivar_sum += ivar
            texts.append(f"{arm} {note.text.split(' onto ')[0].removeprefix('resampled from ')}")
    if covered.mean() < MIN_COVERAGE:
        raise FormatError(
            path,
            f"spectrum off {GRID_TEXT} and it cannot be resampled: its arms ({'; '.join(texts)}) "
            f"cover {covered.mean():.0%} of the grid (at least {MIN_COVERAGE:.0%} needed)",
        )
    flux = np.where(ivar_sum > 0, weighted / np.where(ivar_sum > 0, ivar_sum, 1), 0.0)
    arrays = CoaddArrays(
        targetid=ids[rows],
        fibermap=table_to_arrow(fibermap[rows]),
        flux=flux.astype(np.float32),
        ivar=ivar_sum.astype(np.float32),
        mask=(ivar_sum <= 0).astype(np.uint32),
    )
    note = GridNote(
        "resampled",
        f"arms not on the DESI arm grids ({'; '.join(texts)}): each resampled onto {GRID_TEXT} "
        "by linear interpolation and combined by inverse variance",
    )
    return arrays, note
