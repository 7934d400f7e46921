"""The DESI table layouts the writers produce and the readers expect: column -> numpy dtype.

Dtypes follow the real fuji files in ``tests/data/desi`` (coadd FIBERMAP/EXP_FIBERMAP/SCORES,
Redrock REDSHIFTS/TSNR2) and the zcatalog data model (which joins the same quantities).
Big-endian, as FITS stores them; vector columns use numpy subarray dtypes, e.g. ``(10,)>f8``.
Each dict is in the column order of the real files.
"""

from __future__ import annotations

import numpy as np

_LS_PHOTOMETRY: dict[str, str] = {
    "EBV": ">f4",
    "FLUX_G": ">f4",  # nanomaggies
    "FLUX_R": ">f4",
    "FLUX_Z": ">f4",
    "FLUX_IVAR_G": ">f4",
    "FLUX_IVAR_R": ">f4",
    "FLUX_IVAR_Z": ">f4",
    "FIBERFLUX_G": ">f4",
    "FIBERFLUX_R": ">f4",
    "FIBERFLUX_Z": ">f4",
    "FIBERTOTFLUX_G": ">f4",
    "FIBERTOTFLUX_R": ">f4",
    "FIBERTOTFLUX_Z": ">f4",
    "MASKBITS": ">i2",
    "SERSIC": ">f4",
    "SHAPE_R": ">f4",  # arcsec
    "SHAPE_E1": ">f4",
    "SHAPE_E2": ">f4",
}

# Coadd FIBERMAP: one row per target, same order as the spectra rows.
FIBERMAP_COLUMNS: dict[str, str] = {
    "TARGETID": ">i8",
    "COADD_FIBERSTATUS": ">i4",
    "TARGET_RA": ">f8",  # deg
    "TARGET_DEC": ">f8",
    "OBJTYPE": "S3",  # TGT / SKY / BAD
    "RELEASE": ">i2",  # Legacy Surveys release: 9010/9012 DR9 south, 9011 DR9 north
    "BRICKNAME": "S8",
    "BRICKID": ">i4",
    "BRICK_OBJID": ">i4",
    "MORPHTYPE": "S4",
    **_LS_PHOTOMETRY,
    "PHOTSYS": "S1",  # N / S
    "DESI_TARGET": ">i8",
    "COADD_NUMEXP": ">i2",
    "COADD_EXPTIME": ">f4",  # s
}

# Coadd/Redrock EXP_FIBERMAP: one row per exposure of each target (minimal real layout).
EXP_FIBERMAP_COLUMNS: dict[str, str] = {
    "TARGETID": ">i8",
    "NIGHT": ">i4",
    "EXPID": ">i4",
    "MJD": ">f8",
    "TILEID": ">i4",
    "EXPTIME": ">f8",  # s
    "PETAL_LOC": ">i2",
    "FIBER": ">i4",
    "FIBERSTATUS": ">i4",
}

# Coadd SCORES (minimal): per-arm integrated / median coadd flux and median S/N.
SCORES_COLUMNS: dict[str, str] = {"TARGETID": ">i8"}
for _arm in ("B", "R", "Z"):
    SCORES_COLUMNS[f"INTEG_COADD_FLUX_{_arm}"] = ">f4"
    SCORES_COLUMNS[f"MEDIAN_COADD_FLUX_{_arm}"] = ">f4"
    SCORES_COLUMNS[f"MEDIAN_COADD_SNR_{_arm}"] = ">f4"

# Redrock TSNR2 (minimal): template S/N^2 per target class, summed over arms.
TSNR2_COLUMNS: dict[str, str] = {
    "TARGETID": ">i8",
    "TSNR2_ELG": ">f4",
    "TSNR2_LYA": ">f4",
    "TSNR2_BGS": ">f4",
    "TSNR2_QSO": ">f4",
    "TSNR2_LRG": ">f4",
}

N_REDROCK_COEFF = 10
# Redrock REDSHIFTS, exactly the columns of the real redrock-test.fits.
REDSHIFTS_COLUMNS: dict[str, str] = {
    "TARGETID": ">i8",
    "Z": ">f8",
    "ZERR": ">f8",
    "ZWARN": ">i8",
    "CHI2": ">f8",
    "COEFF": f"({N_REDROCK_COEFF},)>f8",
    "NPIXELS": ">i8",
    "SPECTYPE": "S6",  # GALAXY / QSO / STAR
    "SUBTYPE": "S20",
    "NCOEFF": ">i8",
    "DELTACHI2": ">f8",
}

# zall-pix / zpix ZCATALOG: redshift fit + fibermap quantities + survey bookkeeping.
ZCATALOG_COLUMNS: dict[str, str] = {
    "TARGETID": ">i8",
    "SURVEY": "S7",  # cmx / sv1 / sv2 / sv3 / special / main
    "PROGRAM": "S6",  # dark / bright / backup / other
    "HEALPIX": ">i4",  # nside 64, nested
    "TARGET_RA": ">f8",  # deg
    "TARGET_DEC": ">f8",
    "Z": ">f8",
    "ZERR": ">f8",
    "ZWARN": ">i8",
    "CHI2": ">f8",
    "SPECTYPE": "S6",
    "SUBTYPE": "S20",
    "NPIXELS": ">i8",
    "DELTACHI2": ">f8",
    "COADD_FIBERSTATUS": ">i4",
    "OBJTYPE": "S3",
    "RELEASE": ">i2",
    "BRICKNAME": "S8",
    "BRICKID": ">i4",
    "BRICK_OBJID": ">i4",
    "MORPHTYPE": "S4",
    "PHOTSYS": "S1",
    "EBV": ">f4",
    "FLUX_G": ">f4",
    "FLUX_R": ">f4",
    "FLUX_Z": ">f4",
    "FLUX_IVAR_G": ">f4",
    "FLUX_IVAR_R": ">f4",
    "FLUX_IVAR_Z": ">f4",
    "FIBERFLUX_G": ">f4",
    "FIBERFLUX_R": ">f4",
    "FIBERFLUX_Z": ">f4",
    "MASKBITS": ">i2",
    "COADD_NUMEXP": ">i2",
    "COADD_EXPTIME": ">f4",
    "SV_NSPEC": ">i2",
    "SV_PRIMARY": "?",  # FITS logical: the best spectrum of a TARGETID among sv1-3
    "ZCAT_NSPEC": ">i2",
    "ZCAT_PRIMARY": "?",  # the best spectrum of a TARGETID in the whole catalogue
}


def one_exposure_per_target(
    targetid: np.ndarray, exptime_s: np.ndarray | float = 1000.0
) -> np.ndarray:
    """EXP_FIBERMAP records with one plausible exposure per target (for writers given none)."""
    exp = np.zeros(len(targetid), dtype=np.dtype(list(EXP_FIBERMAP_COLUMNS.items())))
    exp["TARGETID"] = targetid
    exp["NIGHT"] = 20210405
    exp["EXPID"] = 83000
    exp["MJD"] = 59309.2
    exp["EXPTIME"] = exptime_s
    exp["FIBER"] = np.arange(len(targetid)) % 5000
    exp["PETAL_LOC"] = exp["FIBER"] // 500
    return exp


def blank_columns(layout: dict[str, str], n: int) -> dict[str, np.ndarray]:
    """Zero/empty-string columns of ``layout`` for ``n`` rows, for writers' callers to fill in."""
    return {name: np.zeros(n, dtype=np.dtype(dtype)) for name, dtype in layout.items()}
