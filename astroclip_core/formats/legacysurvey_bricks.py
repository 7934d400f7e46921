"""Legacy Surveys DR9 coadd bricks: brick images (``.fits.fz``) and the brick tables.

Brick image ``legacysurvey-<brick>-image-<band>.fits.fz``: an empty primary HDU, then HDU 1, a
tile-compressed (Rice) float32 image of 3600 x 3600 pixels in nanomaggies with a TAN WCS
centred on the brick (CRPIX 1800.5, CD = -/+ 0.262"/3600) and BRICKNAM, BRICKID, BAND/FILTER,
BUNIT keywords, as the real archive serves it (see the DR6 sample in tests/data/legacysurvey).

``survey-bricks.fits.gz``: one gzipped BINTABLE row per brick of the sky (DR9 data model
columns and dtypes below). ``<region>/survey-bricks-dr9-<region>.fits.gz``: one row per brick
the region has data for; only BRICKNAME is read.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Mapping
from pathlib import Path

import fitsio
import numpy as np
from astropy.io import fits as afits

from astroclip_core.formats import FormatError
from astroclip_core.formats._fits import build_records, fits_bytes, open_fits, write_fits_atomic
from astroclip_core.fsio import atomic_write_bytes, read_bytes
from astroclip_core.sky.bricks import (
    BRICK_CRPIX,
    BRICK_PIXSCALE_ARCSEC,
    BRICK_SIZE_PIX,
    BrickIndex,
    BrickWindow,
)

# survey-bricks.fits.gz, as in the DR9 data model.
SURVEY_BRICKS_COLUMNS: dict[str, str] = {
    "BRICKNAME": "S8",
    "BRICKID": ">i4",
    "BRICKQ": ">i2",
    "BRICKROW": ">i4",
    "BRICKCOL": ">i4",
    "RA": ">f8",  # deg, brick centre
    "DEC": ">f8",
    "RA1": ">f8",  # deg, brick bounds
    "RA2": ">f8",
    "DEC1": ">f8",
    "DEC2": ">f8",
}
# survey-bricks-dr9-<region>.fits.gz: the columns written here (the real file has more).
REGION_BRICKS_COLUMNS: dict[str, str] = {
    "BRICKNAME": "S8",
    "RA": ">f8",
    "DEC": ">f8",
    **{f"NEXP_{b}": ">i2" for b in "GRZ"},
    **{f"PSFSIZE_{b}": ">f4" for b in "GRZ"},  # arcsec
    **{f"PSFDEPTH_{b}": ">f4" for b in "GRZ"},  # 1/nanomaggy^2, as in DR9
    "EBV": ">f4",
}
WCS_RTOL = 1e-6


def _write_gz_table(
    path: str | Path, columns: Mapping[str, np.ndarray], dtypes: dict[str, str]
) -> None:
    rec = build_records(f"{path} BRICKS", columns, dtypes)
    raw = fits_bytes(lambda fits: (fits.write(None), fits.write_table(rec, extname="BRICKS")))
    atomic_write_bytes(str(path), gzip.compress(raw, compresslevel=1, mtime=0))


def write_survey_bricks(path: str | Path, columns: Mapping[str, np.ndarray]) -> None:
    """Write ``survey-bricks.fits.gz`` (every SURVEY_BRICKS_COLUMNS column)."""
    _write_gz_table(path, columns, SURVEY_BRICKS_COLUMNS)


def write_region_bricks(path: str | Path, columns: Mapping[str, np.ndarray]) -> None:
    """Write ``survey-bricks-dr9-<region>.fits.gz`` (every REGION_BRICKS_COLUMNS column)."""
    _write_gz_table(path, columns, REGION_BRICKS_COLUMNS)


def _read_gz_table(path: str | Path, columns: list[str]) -> dict[str, np.ndarray]:
    name = str(path)
    try:
        data = read_bytes(name)
    except OSError as err:
        raise FormatError(name, f"cannot read file: {err}") from err
    try:
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (OSError, EOFError) as err:
        raise FormatError(name, f"corrupt gzip stream: {err}") from err
    try:
        with afits.open(io.BytesIO(raw), memmap=False) as hdul:
            if len(hdul) < 2 or not isinstance(hdul[1], afits.BinTableHDU):
                raise FormatError(name, "HDU 1 is not a binary table of bricks")
            have = {c.upper() for c in hdul[1].columns.names}
            missing = [c for c in columns if c not in have]
            if missing:
                raise FormatError(name, f"missing column(s) {missing}")
            table = hdul[1].data
            return {c: np.asarray(table[c]) for c in columns}
    except (OSError, ValueError, TypeError) as err:
        if isinstance(err, FormatError):
            raise
        raise FormatError(name, f"cannot parse as a FITS table: {err}") from err


def read_survey_bricks(path: str | Path) -> BrickIndex:
    """The brick index of ``survey-bricks.fits.gz`` (path, URL, gzipped or not)."""
    cols = _read_gz_table(path, ["BRICKNAME", "RA", "DEC", "RA1", "RA2", "DEC1", "DEC2"])
    return BrickIndex(
        np.strings.strip(cols["BRICKNAME"].astype("U8")),
        *(cols[c].astype(np.float64) for c in ("RA", "DEC", "RA1", "RA2", "DEC1", "DEC2")),
    )


def read_region_bricks(path: str | Path) -> frozenset[str]:
    """Names of the bricks listed in a ``survey-bricks-dr9-<region>.fits.gz``."""
    names = _read_gz_table(path, ["BRICKNAME"])["BRICKNAME"]
    return frozenset(str(n) for n in np.strings.strip(names.astype("U8")))


def brick_image_header(
    brickname: str, brickid: int, band: str, ra_deg: float, dec_deg: float, bounds_deg: tuple
) -> list[dict[str, object]]:
    """Header records of a brick image, laid out like the real DR9 ones."""
    ra1, ra2, dec1, dec2 = bounds_deg
    cd = BRICK_PIXSCALE_ARCSEC / 3600.0
    records: list[tuple[str, object, str]] = [
        ("BRICKNAM", brickname, "LegacySurvey brick RRRr[pm]DDd"),
        ("BRICKID", int(brickid), "LegacySurvey brick id"),
        ("RAMIN", float(ra1), "Brick RA min"),
        ("RAMAX", float(ra2), "Brick RA max"),
        ("DECMIN", float(dec1), "Brick Dec min"),
        ("DECMAX", float(dec2), "Brick Dec max"),
        ("BRICKRA", float(ra_deg), "Brick center"),
        ("BRICKDEC", float(dec_deg), "Brick center"),
        ("BAND", band, "Band of this coadd image"),
        ("FILTER", band, ""),
        ("BUNIT", "nanomaggy", "AB mag = 22.5 - 2.5*log10(nanomaggy)"),
        ("CTYPE1", "RA---TAN", "TANgent plane"),
        ("CTYPE2", "DEC--TAN", "TANgent plane"),
        ("CRVAL1", float(ra_deg), "Reference RA"),
        ("CRVAL2", float(dec_deg), "Reference Dec"),
        ("CRPIX1", BRICK_CRPIX, "Reference x"),
        ("CRPIX2", BRICK_CRPIX, "Reference y"),
        ("CD1_1", -cd, "CD matrix"),
        ("CD1_2", 0.0, "CD matrix"),
        ("CD2_1", 0.0, "CD matrix"),
        ("CD2_2", cd, "CD matrix"),
    ]
    return [{"name": k, "value": v, "comment": c} for k, v, c in records]


def write_brick_image(
    path: str | Path, image: np.ndarray, header: list[dict[str, object]], quantum: float
) -> None:
    """Write a brick image as ``.fits.fz``: Rice, 100x100 tiles, fixed quantum, no dithering.

    ``image`` (3600, 3600) float32 must already be multiples of ``quantum`` (a power of two,
    nanomaggies): then the compression is lossless and a reader gets the very same floats.
    """
    data = np.asarray(image, dtype=np.float32)
    if data.shape != (BRICK_SIZE_PIX, BRICK_SIZE_PIX):
        raise ValueError(f"{path}: brick image shape {data.shape}, expected 3600x3600")

    def build(fits: fitsio.FITS) -> None:
        fits.write(None)
        fits.write(
            data,
            compress="RICE",
            tile_dims=(100, 100),
            qlevel=-quantum,  # negative: an absolute quantisation step
            qmethod="NO_DITHER",
            header=header,
        )

    write_fits_atomic(path, build)


def _check_brick_header(name: str, hdu: fitsio.hdu.ImageHDU, brickname: str | None) -> None:
    """FormatError unless HDU 1 is a 3600x3600 TAN brick image of 0.262" pixels (of ``brickname``)."""
    if hdu.get_exttype() != "IMAGE_HDU":
        raise FormatError(name, f"HDU 1 is {hdu.get_exttype()}, expected a (compressed) image")
    dims = tuple(hdu.get_dims())
    if dims != (BRICK_SIZE_PIX, BRICK_SIZE_PIX):
        raise FormatError(name, f"brick image is {dims}, expected 3600x3600")
    h = hdu.read_header()
    if (
        str(h.get("CTYPE1", "")).strip() != "RA---TAN"
        or str(h.get("CTYPE2", "")).strip() != "DEC--TAN"
    ):
        raise FormatError(name, f"not a TAN WCS: CTYPE {h.get('CTYPE1')!r}, {h.get('CTYPE2')!r}")
    cd = BRICK_PIXSCALE_ARCSEC / 3600.0
    expect = {"CRPIX1": BRICK_CRPIX, "CRPIX2": BRICK_CRPIX, "CD1_1": -cd, "CD2_2": cd}
    for key, value in expect.items():
        if key not in h or not np.isclose(float(h[key]), value, rtol=WCS_RTOL, atol=0):
            raise FormatError(name, f"{key}={h.get(key)!r}, expected {value:.10g}")
    found = str(h.get("BRICKNAM", "")).strip()
    if brickname is not None and found != brickname:
        raise FormatError(name, f"BRICKNAM={found!r}, expected {brickname!r}")


def read_brick_image(path: str | Path, brickname: str | None = None) -> np.ndarray:
    """The whole (3600, 3600) float32 image of a brick file, in nanomaggies; checks it all.

    Raises FormatError when the file is not FITS, is truncated or corrupt (every tile is
    decompressed), is not a 3600x3600 TAN brick of 0.262" pixels, names another brick than
    ``brickname``, or holds non-finite pixels.
    """
    name = str(path)
    with open_fits(path) as fits:
        if len(fits) < 2:
            raise FormatError(name, "missing HDU 1 (the brick image)")
        _check_brick_header(name, fits[1], brickname)
        try:
            image = np.asarray(fits[1].read(), dtype=np.float32)
        except (OSError, ValueError) as err:
            raise FormatError(name, f"cannot decompress the brick image: {err}") from err
    bad = ~np.isfinite(image)
    if bad.any():
        raise FormatError(name, f"{int(bad.sum())} non-finite pixel(s) in the brick image")
    return image


class BrickImageFile:
    """An open brick image for reading windows (only the tiles a window touches are read)."""

    def __init__(self, path: str | Path, brickname: str | None = None) -> None:
        self.name = str(path)
        self._fits = fitsio.FITS(self.name)
        if len(self._fits) < 2:
            self._fits.close()
            raise FormatError(self.name, "missing HDU 1 (the brick image)")
        _check_brick_header(self.name, self._fits[1], brickname)

    def window(self, win: BrickWindow) -> np.ndarray:
        """Pixels ``[y0:y1, x0:x1]`` as float32; FormatError when a tile does not decompress."""
        try:
            return np.asarray(self._fits[1][win.y0 : win.y1, win.x0 : win.x1], dtype=np.float32)
        except (OSError, ValueError) as err:
            raise FormatError(self.name, f"cannot read window {win}: {err}") from err

    def close(self) -> None:
        """Close the file."""
        self._fits.close()


__all__ = [
    "REGION_BRICKS_COLUMNS",
    "SURVEY_BRICKS_COLUMNS",
    "BrickImageFile",
    "brick_image_header",
    "read_brick_image",
    "read_region_bricks",
    "read_survey_bricks",
    "write_brick_image",
    "write_region_bricks",
    "write_survey_bricks",
]
