"""Legacy Surveys DR9 formats: cutout-service FITS images and sweep catalogues.

Cutout (``/viewer/fits-cutout?...&layer=ls-dr9&bands=grz``): one primary HDU holding a
float32 cube (nbands, H, W) in nanomaggies, bands in the requested order, with SURVEY,
VERSION, BANDS, BAND0.., IMAGETYP and a TAN WCS (CRPIX = (W+1)/2, CD = -/+ pixscale/3600).
Sweeps: one BINTABLE of Tractor sources per 10 x 5 deg box.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import fitsio
import numpy as np
import pyarrow as pa
from astropy.io import fits as afits

from astroclip_core.formats import FormatError
from astroclip_core.formats._fits import (
    build_records,
    check_fits_bytes,
    fits_bytes,
    open_fits,
    read_hdu,
    require_columns,
    table_to_arrow,
    write_fits_atomic,
)
from astroclip_core.fsio import read_bytes

PIXSCALE_ARCSEC = 0.262
PIXSCALE_RTOL = 1e-3

# DR9 sweep columns written / read by default (dtypes per the DR9 Tractor data model).
SWEEP_COLUMNS: dict[str, str] = {
    "RELEASE": ">i2",
    "BRICKID": ">i4",
    "BRICKNAME": "S8",
    "OBJID": ">i4",
    "TYPE": "S3",  # PSF / REX / EXP / DEV / SER / DUP
    "RA": ">f8",  # deg
    "DEC": ">f8",
    "EBV": ">f4",
    **{f"FLUX_{b}": ">f4" for b in "GRZ"},  # nanomaggies
    **{f"FLUX_IVAR_{b}": ">f4" for b in "GRZ"},
    **{f"MW_TRANSMISSION_{b}": ">f4" for b in "GRZ"},
    **{f"NOBS_{b}": ">i2" for b in "GRZ"},
    **{f"FIBERFLUX_{b}": ">f4" for b in "GRZ"},
    **{f"PSFSIZE_{b}": ">f4" for b in "GRZ"},  # arcsec
    **{f"PSFDEPTH_{b}": ">f4" for b in "GRZ"},
    "MASKBITS": ">i2",
    "SHAPE_R": ">f4",  # arcsec
    "SHAPE_E1": ">f4",
    "SHAPE_E2": ">f4",
    "SERSIC": ">f4",
}


def write_sweep(path: str | Path, columns: Mapping[str, np.ndarray]) -> None:
    """Write a sweep file: empty PRIMARY + BINTABLE 'SWEEP' with every SWEEP_COLUMNS column."""
    rec = build_records(f"{path} SWEEP", columns, SWEEP_COLUMNS)

    def build(fits: fitsio.FITS) -> None:
        fits.write(None)
        fits.write_table(rec, extname="SWEEP")

    write_fits_atomic(path, build)


def read_sweep(
    path: str | Path,
    columns: Sequence[str] | None = None,
    ra_range_deg: tuple[float, float] | None = None,
    dec_range_deg: tuple[float, float] | None = None,
) -> pa.Table:
    """Read the first table HDU of a sweep file as Arrow (lower-case names, strings stripped).

    ``columns`` (case-insensitive) defaults to SWEEP_COLUMNS; every one must be present.
    ``ra_range_deg`` / ``dec_range_deg`` keep rows with lo <= RA < hi / lo <= DEC < hi.
    """
    wanted = [c.upper() for c in columns] if columns is not None else list(SWEEP_COLUMNS)
    box = [("RA", ra_range_deg), ("DEC", dec_range_deg)]
    to_read = list(dict.fromkeys([*wanted, *(name for name, rng in box if rng is not None)]))
    with open_fits(path) as fits:
        if len(fits) < 2:
            raise FormatError(path, "missing HDU: no table after the primary HDU")
        hdu = fits[1]
        if hdu.get_exttype() != "BINARY_TBL":
            raise FormatError(path, f"HDU 1 is {hdu.get_exttype()}, expected a binary table")
        require_columns(hdu, path, to_read)
        rec = read_hdu(path, "sweep table", lambda: hdu.read(columns=to_read))
    keep = np.ones(len(rec), dtype=bool)
    for name, rng in box:
        if rng is not None:
            keep &= (rec[name] >= rng[0]) & (rec[name] < rng[1])
    return table_to_arrow(rec[keep][wanted])


def _cutout_header(
    nbands: int,
    size_pix: tuple[int, int],
    ra_deg: float,
    dec_deg: float,
    pixscale_arcsec: float,
    bands: str,
) -> list[dict[str, object]]:
    """Header records laid out like the real DR9 cutout service's."""
    height, width = size_pix
    cd_deg = pixscale_arcsec / 3600.0
    records: list[tuple[str, object, str]] = [
        ("SURVEY", "LegacySurvey", ""),
        ("VERSION", "DR9", ""),
        ("IMAGETYP", "IMAGE", "None"),
        ("BANDS", bands, ""),
        *((f"BAND{i}", band, "") for i, band in enumerate(bands[:nbands])),
        ("CTYPE1", "RA---TAN", "TANgent plane"),
        ("CTYPE2", "DEC--TAN", "TANgent plane"),
        ("CRVAL1", float(ra_deg), "Reference RA"),
        ("CRVAL2", float(dec_deg), "Reference Dec"),
        ("CRPIX1", (width + 1) / 2.0, "Reference x"),
        ("CRPIX2", (height + 1) / 2.0, "Reference y"),
        ("CD1_1", -cd_deg, "CD matrix"),
        ("CD1_2", 0.0, "CD matrix"),
        ("CD2_1", 0.0, "CD matrix"),
        ("CD2_2", cd_deg, "CD matrix"),
        ("IMAGEW", float(width), "Image width"),
        ("IMAGEH", float(height), "Image height"),
    ]
    return [{"name": k, "value": v, "comment": c} for k, v, c in records]


def write_cutout(
    image: np.ndarray,
    ra_deg: float,
    dec_deg: float,
    pixscale_arcsec: float = PIXSCALE_ARCSEC,
    bands: str = "grz",
) -> bytes:
    """The FITS bytes the cutout service returns for ``image`` (nbands, H, W) in nanomaggies."""
    cube = np.asarray(image, dtype=np.float32)
    if cube.ndim != 3 or cube.shape[0] != len(bands):
        raise ValueError(
            f"cutout image must be ({len(bands)}, H, W) for bands {bands!r}, got {cube.shape}"
        )
    header = _cutout_header(len(bands), cube.shape[1:], ra_deg, dec_deg, pixscale_arcsec, bands)
    return fits_bytes(lambda fits: fits.write(cube, header=header))


def _source_bytes(source: str | Path | bytes) -> tuple[str, bytes]:
    if isinstance(source, bytes | bytearray | memoryview):
        return "<bytes>", bytes(source)
    name = str(source)
    try:
        return name, read_bytes(name)
    except OSError as err:
        raise FormatError(name, f"cannot read file: {err}") from err


def _pixscale_arcsec(name: str, header: afits.Header) -> float:
    """Pixel scale from the CD matrix (or CDELT), in arcsec; FormatError when absent."""
    if "CD1_1" in header and "CD2_2" in header:
        scale_x = np.hypot(header["CD1_1"], header.get("CD2_1", 0.0))
        scale_y = np.hypot(header["CD2_2"], header.get("CD1_2", 0.0))
    elif "CDELT1" in header and "CDELT2" in header:
        scale_x, scale_y = abs(header["CDELT1"]), abs(header["CDELT2"])
    else:
        raise FormatError(name, "header has no CD matrix or CDELT, cannot check the pixel scale")
    if not np.isclose(scale_x, scale_y, rtol=PIXSCALE_RTOL):
        raise FormatError(
            name, f"non-square pixels: {scale_x * 3600:.5f} x {scale_y * 3600:.5f} arcsec"
        )
    return float(scale_x * 3600.0)


def _check_bands(name: str, header: afits.Header, nbands: int, expect_bands: str) -> None:
    bands = str(header.get("BANDS", "")).strip()
    per_band = "".join(str(header.get(f"BAND{i}", "")).strip() for i in range(nbands))
    if bands != expect_bands or per_band != expect_bands or nbands != len(expect_bands):
        raise FormatError(
            name,
            f"wrong bands: BANDS={bands!r}, BAND0..={per_band!r}, {nbands} planes; "
            f"expected {expect_bands!r} in that order",
        )


def read_cutout(
    source: str | Path | bytes,
    expect_bands: str = "grz",
    expect_pixscale_arcsec: float = PIXSCALE_ARCSEC,
) -> np.ndarray:
    """Read a cutout-service FITS (path, fsspec URL or bytes) as float32 (3, H, W) g, r, z.

    Values are nanomaggies. Raises FormatError when the input is not FITS, is truncated,
    has no 3-D primary image, has other bands or band order, another pixel scale (relative
    tolerance 1e-3), or any non-finite pixel. An all-zero band is returned as is: that is
    how the service reports sky without coverage.
    """
    name, data = _source_bytes(source)
    check_fits_bytes(name, data[:80], len(data))
    try:
        with warnings.catch_warnings():
            # astropy only warns on short data; the explicit size check below raises instead
            warnings.filterwarnings("ignore", message="File may have been truncated")
            hdul = afits.open(io.BytesIO(data), memmap=False, lazy_load_hdus=True)
        with hdul:
            hdu = hdul[0]
            header = hdu.header
            shape = tuple(header.get(f"NAXIS{i}", 0) for i in range(header.get("NAXIS", 0), 0, -1))
            need = hdu.fileinfo()["datLoc"] + abs(header["BITPIX"]) // 8 * int(
                np.prod(shape or (0,))
            )
            if len(data) < need:
                raise FormatError(
                    name, f"truncated: primary image needs {need} bytes, got {len(data)}"
                )
            cube = hdu.data
    except OSError as err:
        raise FormatError(name, f"astropy cannot parse it as FITS: {err}") from err
    if cube is not None and cube.ndim == 2:
        bands = str(header.get("BANDS", header.get("BAND", "?"))).strip()
        raise FormatError(
            name,
            f"one band only: the primary HDU must hold a 3-D (bands, H, W) image of "
            f"{', '.join(expect_bands)}, but has a 2-D one, shape {cube.shape} (BANDS={bands!r})",
        )
    if cube is None or cube.ndim != 3:
        got = "no data" if cube is None else f"shape {cube.shape}"
        raise FormatError(name, f"primary HDU must hold a 3-D (bands, H, W) image, has {got}")
    _check_bands(name, header, cube.shape[0], expect_bands)
    pixscale = _pixscale_arcsec(name, header)
    if not np.isclose(pixscale, expect_pixscale_arcsec, rtol=PIXSCALE_RTOL, atol=0):
        raise FormatError(
            name, f"wrong pixel scale {pixscale:.5f} arcsec, expected {expect_pixscale_arcsec}"
        )
    cube = np.ascontiguousarray(cube, dtype=np.float32)
    bad = ~np.isfinite(cube)
    if bad.any():
        raise FormatError(name, f"{int(bad.sum())} non-finite pixel(s) (NaN/inf) in the image")
    return cube


def cutout_centre_deg(source: str | Path | bytes) -> tuple[float, float]:
    """(RA, Dec) in degrees of the centre of a cutout FITS (path, fsspec URL or bytes), from
    its primary header's celestial WCS; FormatError naming the file when it has none."""
    from astropy.wcs import WCS

    name, data = _source_bytes(source)
    check_fits_bytes(name, data[:80], len(data))
    try:
        header = afits.getheader(io.BytesIO(data), 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FITS WCS fix-up notes, not problems
            wcs = WCS(header, naxis=2)
    except (OSError, ValueError, KeyError) as err:
        raise FormatError(name, f"cannot read a WCS from the primary header: {err}") from err
    if not wcs.has_celestial:
        raise FormatError(name, "primary header has no celestial WCS (CTYPE RA---/DEC--)")
    width, height = header.get("NAXIS1", 0), header.get("NAXIS2", 0)
    ra, dec = wcs.celestial.pixel_to_world_values((width - 1) / 2.0, (height - 1) / 2.0)
    return float(ra) % 360.0, float(dec)


__all__ = [
    "PIXSCALE_ARCSEC",
    "cutout_centre_deg",
    "SWEEP_COLUMNS",
    "read_cutout",
    "read_sweep",
    "write_cutout",
    "write_sweep",
]
