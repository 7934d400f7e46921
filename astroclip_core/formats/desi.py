"""DESI formats: wavelength grids, the coadd reader/writer and the camera (arm) merge.

The zcatalog and Redrock readers/writers live in ``zcatalog.py`` and ``redrock.py`` and are
re-exported here, so ``from astroclip_core.formats.desi import read_zcatalog`` works.

Mask encoding of the merged spectra: ``uint32``, the DESI spectral mask bits (``specmask``)
OR-ed across arms in the overlaps; nonzero means bad. As in ``coadd_cameras`` the mask is
cleared wherever the merged ivar > 0, so a nonzero mask only remains where ivar == 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import fitsio
import numpy as np
import pyarrow as pa

from astroclip_core.formats import FormatError
from astroclip_core.formats._fits import (
    build_records,
    open_fits,
    read_hdu,
    read_image_rows_into,
    require_columns,
    require_hdus,
    table_to_arrow,
    write_fits_atomic,
)
from astroclip_core.formats.desi_columns import (
    EXP_FIBERMAP_COLUMNS,
    FIBERMAP_COLUMNS,
    REDSHIFTS_COLUMNS,
    SCORES_COLUMNS,
    ZCATALOG_COLUMNS,
    one_exposure_per_target,
)
from astroclip_core.formats.redrock import read_redrock, write_redrock
from astroclip_core.formats.zcatalog import (
    GalaxySelection,
    SelectionReport,
    read_zcatalog,
    write_zcatalog,
)

WAVELENGTH_STEP_ANGSTROM = 0.8
# Arm grids, linear at 0.8 A (checked on a real fuji coadd): (min, max, npix)
ARM_GRIDS_ANGSTROM: dict[str, tuple[float, float, int]] = {
    "B": (3600.0, 5800.0, 2751),
    "R": (5760.0, 7620.0, 2326),
    "Z": (7520.0, 9824.0, 2881),
}
ARMS = ("B", "R", "Z")
N_WAVELENGTH = 7781
# The merged grid: 3600.0 .. 9824.0 A, 7781 pixels (float64). Fixed interface.
WAVELENGTH = np.round(3600.0 + WAVELENGTH_STEP_ANGSTROM * np.arange(N_WAVELENGTH), 4)


def arm_wavelength(arm: str) -> np.ndarray:
    """The float64 wavelength grid (Angstrom) of arm 'B', 'R' or 'Z'."""
    lo, _hi, n = ARM_GRIDS_ANGSTROM[arm]
    return np.round(lo + WAVELENGTH_STEP_ANGSTROM * np.arange(n), 4)


# Where each arm sits on the merged grid, e.g. R -> slice(2700, 5026).
ARM_SLICES: dict[str, slice] = {
    arm: slice(start := round((lo - WAVELENGTH[0]) / WAVELENGTH_STEP_ANGSTROM), start + n)
    for arm, (lo, _hi, n) in ARM_GRIDS_ANGSTROM.items()
}
# Same-grid tolerance used by desispec.coaddition.coadd_cameras (Angstrom).
GRID_TOLERANCE_ANGSTROM = 1e-4
FLUX_UNIT = "10**-17 erg/(s cm2 Angstrom)"
IVAR_UNIT = "10**+34 (s2 cm4 Angstrom2) / erg2"


@dataclass(frozen=True)
class CoaddArrays:
    """Merged spectra of a coadd file, rows in FIBERMAP (file) order."""

    targetid: np.ndarray  # (N,) int64
    fibermap: pa.Table  # N rows, lower-case FIBERMAP columns, strings stripped
    flux: np.ndarray  # (N, 7781) float32, 1e-17 erg/s/cm2/A on WAVELENGTH
    ivar: np.ndarray  # (N, 7781) float32
    mask: np.ndarray  # (N, 7781) uint32 DESI mask bits, nonzero = bad


def merge_arms(
    flux: Mapping[str, np.ndarray], ivar: Mapping[str, np.ndarray], mask: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge the B, R, Z arms onto WAVELENGTH exactly as ``desispec.coaddition.coadd_cameras``.

    Inputs are keyed by arm, each (N, npix_arm). Outside the overlaps pixels are copied; in
    the overlaps flux is the ivar-weighted mean (0 where both ivars are 0, computed in
    float64 like desispec), ivar is summed and masks are OR-ed; finally the mask is cleared
    wherever the merged ivar > 0. Returns flux, ivar (float32) and mask (uint32), (N, 7781).
    """
    n = len(flux[ARMS[0]])
    out_flux = np.empty((n, N_WAVELENGTH), dtype=np.float32)
    out_ivar = np.empty((n, N_WAVELENGTH), dtype=np.float32)
    out_mask = np.empty((n, N_WAVELENGTH), dtype=np.uint32)
    arms = {"FLUX": flux, "IVAR": ivar, "MASK": mask}

    def copy_arm(arm: str, out: np.ndarray, kind: str) -> None:
        out[...] = arms[kind][arm]

    _merge_into(out_flux, out_ivar, out_mask, copy_arm)
    return out_flux, out_ivar, out_mask


def _merge_into(
    out_flux: np.ndarray,
    out_ivar: np.ndarray,
    out_mask: np.ndarray,
    fill: Callable[[str, np.ndarray, str], None],
) -> None:
    """Fill the (N, 7781) outputs arm by arm with ``fill(arm, out_view, kind)``, then merge.

    Each arm is written straight into its slice; before the next arm overwrites the shared
    overlap, the lower arm's overlap values (N x 51 or N x 126 pixels) are saved, so the
    merge needs no full-size per-arm arrays.
    """
    previous: slice | None = None
    for arm in ARMS:
        sl = ARM_SLICES[arm]
        saved = None
        if previous is not None:
            overlap = slice(sl.start, previous.stop)
            saved = (
                out_flux[:, overlap].copy(),
                out_ivar[:, overlap].copy(),
                out_mask[:, overlap].copy(),
            )
        fill(arm, out_flux[:, sl], "FLUX")
        fill(arm, out_ivar[:, sl], "IVAR")
        fill(arm, out_mask[:, sl], "MASK")
        if saved is not None:
            flux_a, ivar_a, mask_a = saved
            # float64 like desispec: float32 products lose precision when the arms cancel
            iv_a = ivar_a.astype(np.float64)  # (N, n_overlap)
            iv_b = out_ivar[:, overlap].astype(np.float64)
            weighted = iv_a * flux_a + iv_b * out_flux[:, overlap]
            iv_sum = iv_a + iv_b
            out_flux[:, overlap] = weighted / (iv_sum + (iv_sum == 0))
            out_ivar[:, overlap] = iv_sum
            out_mask[:, overlap] = np.where(iv_sum > 0, 0, mask_a | out_mask[:, overlap])
        previous = sl
    np.copyto(out_mask, 0, where=out_ivar > 0)


def _coadd_hdu_names() -> list[str]:
    names = ["FIBERMAP"]
    for arm in ARMS:
        names += [f"{arm}_WAVELENGTH", f"{arm}_FLUX", f"{arm}_IVAR", f"{arm}_MASK"]
    return names


def _check_coadd_layout(fits: fitsio.FITS, path: str | Path, n_rows: int) -> None:
    """Raise FormatError on a wrong arm grid or a spectra row count unlike FIBERMAP's."""
    for arm in ARMS:
        wave = read_hdu(path, f"{arm}_WAVELENGTH", fits[f"{arm}_WAVELENGTH"].read)
        expected = arm_wavelength(arm)
        if wave.shape != expected.shape or not np.allclose(
            wave, expected, rtol=0, atol=GRID_TOLERANCE_ANGSTROM
        ):
            lo, hi, npix = ARM_GRIDS_ANGSTROM[arm]
            got = (
                f"{wave.size} pixels, {wave.min():.2f}-{wave.max():.2f} A" if wave.size else "empty"
            )
            raise FormatError(
                path,
                f"unexpected wavelength grid in {arm}_WAVELENGTH: {got}, "
                f"expected {npix} pixels {lo}-{hi} A at {WAVELENGTH_STEP_ANGSTROM} A",
            )
        for kind in ("FLUX", "IVAR", "MASK"):
            dims = tuple(fits[f"{arm}_{kind}"].get_dims())
            if dims != (n_rows, expected.size):
                raise FormatError(
                    path,
                    f"{arm}_{kind} has shape {dims}, expected ({n_rows}, {expected.size}) "
                    f"to match the {n_rows} FIBERMAP rows",
                )


def require_fibermap(fits: fitsio.FITS, path: str | Path) -> None:
    """Raise FormatError naming ``path`` when the file has no FIBERMAP HDU.

    Without it a coadd's spectra have no TARGETID and no position, so the file cannot be used
    as a coadd even when its arms are there (e.g. a file cut down to FLUX/IVAR/WAVELENGTH).
    """
    if "FIBERMAP" in fits:
        return
    present = [hdu.get_extname() for hdu in fits if hdu.get_extname()]
    raise FormatError(
        path,
        "missing HDU FIBERMAP, so its spectra have no TARGETID or sky position: not a usable "
        f"DESI coadd (its HDUs: {', '.join(present) or 'none'})",
    )


def _row_runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """Sorted row indices as contiguous [start, stop) runs, e.g. [0,1,2,7] -> [(0,3),(7,8)]."""
    if rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [rows.size]])
    return [(int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, stops, strict=True)]


def _select_rows(path: str | Path, file_ids: np.ndarray, targetids: Sequence[int]) -> np.ndarray:
    """Sorted FIBERMAP row indices of ``targetids``; raise naming any that are absent."""
    wanted = np.unique(np.asarray(targetids, dtype=np.int64))
    rows = np.flatnonzero(np.isin(file_ids, wanted))
    missing = np.setdiff1d(wanted, file_ids[rows])
    if missing.size:
        raise KeyError(f"{path}: TARGETID(s) not in FIBERMAP: {missing[:10].tolist()}")
    return rows


def read_coadd_arrays(path: str | Path, targetids: Sequence[int] | None = None) -> CoaddArrays:
    """Read a DESI coadd (healpix or tile) and merge its arms onto WAVELENGTH.

    Only FIBERMAP and the B/R/Z WAVELENGTH, FLUX, IVAR and MASK HDUs are read (never the
    RESOLUTION matrices). With ``targetids``, only the rows of those targets are read from
    disk (contiguous row runs); rows come back in file order, not in the requested order.
    A requested TARGETID absent from the file raises KeyError.
    """
    with open_fits(path) as fits:
        require_fibermap(fits, path)
        require_hdus(fits, path, _coadd_hdu_names())
        fibermap_hdu = fits["FIBERMAP"]
        require_columns(fibermap_hdu, path, ["TARGETID", "TARGET_RA", "TARGET_DEC"])
        n_rows = fibermap_hdu.get_nrows()
        _check_coadd_layout(fits, path, n_rows)
        runs = None
        if targetids is None:
            fibermap = read_hdu(path, "FIBERMAP", fibermap_hdu.read)
        else:
            file_ids = read_hdu(path, "FIBERMAP", lambda: fibermap_hdu.read(columns="TARGETID"))
            rows = _select_rows(path, np.asarray(file_ids, dtype=np.int64), targetids)
            runs = _row_runs(rows)
            fibermap = read_hdu(path, "FIBERMAP", lambda: fibermap_hdu.read(rows=rows))
        n_sel = len(fibermap)
        runs = runs if runs is not None else [(0, n_rows)]
        merged_flux = np.empty((n_sel, N_WAVELENGTH), dtype=np.float32)
        merged_ivar = np.empty((n_sel, N_WAVELENGTH), dtype=np.float32)
        merged_mask = np.empty((n_sel, N_WAVELENGTH), dtype=np.uint32)
        _merge_into(
            merged_flux,
            merged_ivar,
            merged_mask,
            lambda arm, out, kind: read_image_rows_into(fits, path, f"{arm}_{kind}", runs, out),
        )
    table = table_to_arrow(fibermap)
    return CoaddArrays(
        targetid=np.asarray(fibermap["TARGETID"], dtype=np.int64),
        fibermap=table,
        flux=merged_flux,
        ivar=merged_ivar,
        mask=merged_mask,
    )


def spectra_column(values: np.ndarray) -> pa.FixedSizeListArray:
    """An (N, L) array as an Arrow fixed-size-list column of L values per row."""
    values = np.ascontiguousarray(values)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def read_coadd(path: str | Path, targetids: Sequence[int] | None = None) -> pa.Table:
    """Read a DESI coadd as one Arrow row per FIBERMAP row (fixed interface).

    Columns: ``targetid`` (int64), ``target_ra``, ``target_dec`` (deg), ``flux`` and ``ivar``
    (7781 float32 on WAVELENGTH), ``mask`` (7781 uint32 DESI mask bits, nonzero = bad), then
    every other FIBERMAP column in lower case. Rows are in file order, restricted to
    ``targetids`` when given (see :func:`read_coadd_arrays`).
    """
    arrays = read_coadd_arrays(path, targetids)
    fibermap = arrays.fibermap
    head = {
        "targetid": pa.array(arrays.targetid),
        "target_ra": fibermap["target_ra"],
        "target_dec": fibermap["target_dec"],
        "flux": spectra_column(arrays.flux),
        "ivar": spectra_column(arrays.ivar),
        "mask": spectra_column(arrays.mask),
    }
    rest = {name: fibermap[name] for name in fibermap.column_names if name not in head}
    return pa.table({**head, **rest})


# Line-spread function written when the caller gives no resolution matrix: Gaussian with
# FWHM 1.8 A (typical DESI), 11 diagonals (offsets +5 .. -5 pixels, DESI's row order).
DEFAULT_LSF_FWHM_ANGSTROM = 1.8
N_RESOLUTION_DIAGONALS = 11
_RESOLUTION_CHUNK_ROWS = 256  # rows per write, so a default matrix never needs (N, 11, npix)


def gaussian_resolution(fwhm_angstrom: float = DEFAULT_LSF_FWHM_ANGSTROM) -> np.ndarray:
    """The (11,) diagonals of a Gaussian LSF of this FWHM on the 0.8 A grid, summing to 1."""
    sigma_pix = fwhm_angstrom / (2 * np.sqrt(2 * np.log(2))) / WAVELENGTH_STEP_ANGSTROM
    half = N_RESOLUTION_DIAGONALS // 2
    offsets = np.arange(half, -half - 1, -1)  # (11,) +5 .. -5
    kernel = np.exp(-0.5 * (offsets / sigma_pix) ** 2)
    return (kernel / kernel.sum()).astype(np.float32)


def _coadd_scores(
    targetid: np.ndarray, flux: Mapping[str, np.ndarray], ivar: Mapping[str, np.ndarray]
) -> np.ndarray:
    """SCORES rows: per-arm integrated flux (1e-17 erg/s/cm2), median flux and median S/N."""
    scores = np.zeros(len(targetid), dtype=np.dtype(list(SCORES_COLUMNS.items())))
    scores["TARGETID"] = targetid
    for arm in ARMS:
        arm_flux = flux[arm].astype(np.float64)  # (N, npix)
        snr = arm_flux * np.sqrt(np.clip(ivar[arm], 0, None))
        if len(targetid):
            scores[f"INTEG_COADD_FLUX_{arm}"] = arm_flux.sum(axis=1) * WAVELENGTH_STEP_ANGSTROM
            scores[f"MEDIAN_COADD_FLUX_{arm}"] = np.median(arm_flux, axis=1)
            scores[f"MEDIAN_COADD_SNR_{arm}"] = np.median(snr, axis=1)
    return scores


def _primary_header(header: Mapping[str, object] | None) -> list[dict[str, object]]:
    """PRIMARY keywords: healpix grouping defaults (as in real coadds) overridden by ``header``."""
    keys: dict[str, object] = {"SPGRP": "healpix", "HPXNSIDE": 64, "HPXNEST": "True"}
    keys.update(header or {})
    if keys["SPGRP"] == "healpix" and "HPXPIXEL" in keys:
        keys.setdefault("SPGRPVAL", keys["HPXPIXEL"])
    return [{"name": key, "value": value} for key, value in keys.items()]


def _check_arm_arrays(path: str | Path, n: int, **arrays: Mapping[str, np.ndarray]) -> None:
    for kind, by_arm in arrays.items():
        for arm in ARMS:
            if arm not in by_arm:
                raise ValueError(f"{path}: {kind} has no arm {arm!r}")
            npix = ARM_GRIDS_ANGSTROM[arm][2]
            shape = np.shape(by_arm[arm])
            if shape[:1] + shape[-1:] != (n, npix):
                raise ValueError(
                    f"{path}: {kind}[{arm!r}] has shape {shape}, need ({n}, ..., {npix})"
                )


def _write_resolution(
    fits: fitsio.FITS, arm: str, n: int, resolution: Mapping[str, np.ndarray] | None
) -> None:
    npix = ARM_GRIDS_ANGSTROM[arm][2]
    extname = f"{arm}_RESOLUTION"
    if resolution is not None:
        fits.write(np.asarray(resolution[arm], dtype=np.float32), extname=extname)
        return
    fits.create_image_hdu(dims=(n, N_RESOLUTION_DIAGONALS, npix), dtype="f4", extname=extname)
    kernel = np.repeat(gaussian_resolution()[:, None], npix, axis=1)  # (11, npix)
    for start in range(0, n, _RESOLUTION_CHUNK_ROWS):
        rows = min(_RESOLUTION_CHUNK_ROWS, n - start)
        fits[extname].write(
            np.broadcast_to(kernel, (rows, *kernel.shape)).copy(), start=[start, 0, 0]
        )


def write_coadd(
    path: str | Path,
    fibermap: Mapping[str, np.ndarray],
    flux: Mapping[str, np.ndarray],
    ivar: Mapping[str, np.ndarray],
    mask: Mapping[str, np.ndarray],
    resolution: Mapping[str, np.ndarray] | None = None,
    header: Mapping[str, object] | None = None,
    exp_fibermap: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write a DESI coadd file in the real HDU order and units, atomically.

    ``fibermap`` needs every FIBERMAP_COLUMNS column; flux/ivar/mask are keyed by arm 'B',
    'R', 'Z', each (N, npix_arm) (written float32/float32/uint32); ``resolution`` is
    (N, 11, npix_arm) per arm, or None for a Gaussian LSF of FWHM 1.8 A. ``header`` adds
    PRIMARY keywords (HPXPIXEL, SURVEY, PROGRAM, ...) over SPGRP='healpix', HPXNSIDE=64,
    HPXNEST. ``exp_fibermap`` (EXP_FIBERMAP_COLUMNS) defaults to one exposure per target.
    HDUs: PRIMARY, FIBERMAP, EXP_FIBERMAP, {B,R,Z}_{WAVELENGTH,FLUX,IVAR,MASK,RESOLUTION}, SCORES.
    """
    fm = build_records(f"{path} FIBERMAP", fibermap, FIBERMAP_COLUMNS)
    n = len(fm)
    _check_arm_arrays(path, n, flux=flux, ivar=ivar, mask=mask)
    if resolution is not None:
        _check_arm_arrays(path, n, resolution=resolution)
    exp = (
        one_exposure_per_target(fm["TARGETID"], fm["COADD_EXPTIME"])
        if exp_fibermap is None
        else build_records(f"{path} EXP_FIBERMAP", exp_fibermap, EXP_FIBERMAP_COLUMNS)
    )
    scores = _coadd_scores(fm["TARGETID"], flux, ivar)

    def build(fits: fitsio.FITS) -> None:
        fits.write(None, header=_primary_header(header))
        fits.write_table(fm, extname="FIBERMAP")
        fits.write_table(exp, extname="EXP_FIBERMAP")
        for arm in ARMS:
            fits.write(
                arm_wavelength(arm), extname=f"{arm}_WAVELENGTH", header={"BUNIT": "Angstrom"}
            )
            fits.write(
                np.asarray(flux[arm], dtype=np.float32),
                extname=f"{arm}_FLUX",
                header={"BUNIT": FLUX_UNIT},
            )
            fits.write(
                np.asarray(ivar[arm], dtype=np.float32),
                extname=f"{arm}_IVAR",
                header={"BUNIT": IVAR_UNIT},
            )
            fits.write(np.asarray(mask[arm], dtype=np.uint32), extname=f"{arm}_MASK")
            _write_resolution(fits, arm, n, resolution)
        fits.write_table(scores, extname="SCORES")

    write_fits_atomic(path, build)


__all__ = [
    "ARMS",
    "ARM_GRIDS_ANGSTROM",
    "ARM_SLICES",
    "EXP_FIBERMAP_COLUMNS",
    "FIBERMAP_COLUMNS",
    "N_WAVELENGTH",
    "REDSHIFTS_COLUMNS",
    "SCORES_COLUMNS",
    "WAVELENGTH",
    "ZCATALOG_COLUMNS",
    "CoaddArrays",
    "GalaxySelection",
    "SelectionReport",
    "arm_wavelength",
    "merge_arms",
    "read_coadd",
    "read_coadd_arrays",
    "read_redrock",
    "read_zcatalog",
    "require_fibermap",
    "write_coadd",
    "write_redrock",
    "write_zcatalog",
]
