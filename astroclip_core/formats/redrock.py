"""Redrock output files (``redrock-<survey>-<program>-<coadd_pixel>.fits``): writer and reader.

HDUs, as in the real files: PRIMARY, REDSHIFTS, FIBERMAP, EXP_FIBERMAP, TSNR2.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import fitsio
import numpy as np
import pyarrow as pa

from astroclip_core.formats._fits import (
    build_records,
    open_fits,
    read_hdu,
    require_columns,
    require_hdus,
    table_to_arrow,
    write_fits_atomic,
)
from astroclip_core.formats.desi_columns import (
    FIBERMAP_COLUMNS,
    REDSHIFTS_COLUMNS,
    TSNR2_COLUMNS,
    one_exposure_per_target,
)

REDROCK_HDUS = ("REDSHIFTS", "FIBERMAP", "EXP_FIBERMAP", "TSNR2")
# Columns a REDSHIFTS table must have to be usable (COEFF/NPIXELS/... are optional to read).
REDSHIFTS_REQUIRED = ("TARGETID", "Z", "ZERR", "ZWARN", "SPECTYPE", "DELTACHI2")


def write_redrock(
    path: str | Path,
    redshifts: Mapping[str, np.ndarray],
    fibermap: Mapping[str, np.ndarray],
    header: Mapping[str, object] | None = None,
    tsnr2: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write a Redrock file, atomically.

    ``redshifts`` needs every REDSHIFTS_COLUMNS column (COEFF as (N, 10)); ``fibermap`` every
    FIBERMAP_COLUMNS column, rows matching ``redshifts``. ``header`` goes into PRIMARY.
    ``tsnr2`` (TSNR2_COLUMNS) defaults to NaN values: template S/N needs the spectra and
    templates, which this writer does not have, and NaN says "not computed" honestly.
    """
    z = build_records(f"{path} REDSHIFTS", redshifts, REDSHIFTS_COLUMNS)
    fm = build_records(f"{path} FIBERMAP", fibermap, FIBERMAP_COLUMNS)
    if not np.array_equal(z["TARGETID"], fm["TARGETID"]):
        raise ValueError(f"{path}: REDSHIFTS and FIBERMAP TARGETIDs differ (row order must match)")
    if tsnr2 is None:
        snr = np.zeros(len(z), dtype=np.dtype(list(TSNR2_COLUMNS.items())))
        snr["TARGETID"] = z["TARGETID"]
        for name in TSNR2_COLUMNS:
            if name != "TARGETID":
                snr[name] = np.nan
    else:
        snr = build_records(f"{path} TSNR2", tsnr2, TSNR2_COLUMNS)
    exp = one_exposure_per_target(z["TARGETID"])
    keys = [{"name": key, "value": value} for key, value in (header or {}).items()]

    def build(fits: fitsio.FITS) -> None:
        fits.write(None, header=keys)
        fits.write_table(z, extname="REDSHIFTS")
        fits.write_table(fm, extname="FIBERMAP")
        fits.write_table(exp, extname="EXP_FIBERMAP")
        fits.write_table(snr, extname="TSNR2")

    write_fits_atomic(path, build)


def read_redrock(path: str | Path) -> pa.Table:
    """The REDSHIFTS HDU of a Redrock file as Arrow, lower-case columns, strings stripped.

    COEFF is kept as a fixed-size list of 10 float64 per row.
    """
    with open_fits(path) as fits:
        require_hdus(fits, path, ["REDSHIFTS"])
        hdu = fits["REDSHIFTS"]
        require_columns(hdu, path, REDSHIFTS_REQUIRED)
        rec = read_hdu(path, "REDSHIFTS", hdu.read)
    return table_to_arrow(rec)
