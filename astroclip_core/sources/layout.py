"""Relative paths inside the public DESI and Legacy Surveys trees.

This module is the one owner of the remote layouts. The downloaders join these paths to a
configured base URL (HTTPS, ``s3://``, or the sample sky's loopback server); the sample-sky
generator writes its files at the same relative paths under a local folder.

DESI (relative to the public root, e.g. ``https://data.desi.lbl.gov/public/``)::

    <release>/spectro/redux/<specprod>/<zcatalog_dir>/zall-pix-<specprod>.fits
    <release>/spectro/redux/<specprod>/<zcatalog_dir>/zpix-<survey>-<program>.fits
    <release>/spectro/redux/<specprod>/healpix/<survey>/<program>/<coadd_pixel//100>/<coadd_pixel>/coadd-<survey>-<program>-<coadd_pixel>.fits
    <release>/spectro/redux/<specprod>/healpix/tilepix.fits

``<zcatalog_dir>`` is ``Release.zcatalog_dir``, read from the listing by discovery: ``zcatalog``
in EDR/fuji, ``zcatalog/v1`` in DR1/iron (a later catalogue version would be ``zcatalog/v2``).

Legacy Surveys DR9 (relative to e.g. ``https://portal.nersc.gov/cfs/cosmo/data/legacysurvey/dr9/``)::

    <north|south>/sweep/9.0/sweep-<ramin><p|m><decmin>-<ramax><p|m><decmax>.fits
    survey-bricks.fits.gz                                    every brick: name, centre, bounds
    <north|south>/survey-bricks-dr9-<north|south>.fits.gz    the bricks each region has
    <north|south>/coadd/<brick[:3]>/<brick>/legacysurvey-<brick>-image-<band>.fits.fz
"""

from __future__ import annotations

import math
import re

from astroclip_core.releases import Release

# Real public roots; every one of them is configuration, these are only the defaults for
# "real" mode. The sample sky serves the same relative paths under its own loopback root.
DESI_PUBLIC_ROOT = "https://data.desi.lbl.gov/public/"
DESI_S3_ROOT = "s3://desidata/"
LEGACYSURVEY_DR9_ROOT = "https://portal.nersc.gov/cfs/cosmo/data/legacysurvey/dr9/"
CUTOUT_SERVICE_URL = "https://www.legacysurvey.org/viewer/fits-cutout"

# Sample-sky server: the same layouts under these URL prefixes on 127.0.0.1.
SAMPLESKY_DESI_PREFIX = "public/"
SAMPLESKY_LEGACYSURVEY_PREFIX = "cfs/cosmo/data/legacysurvey/dr9/"
SAMPLESKY_CUTOUT_PATH = "viewer/fits-cutout"

# Dec boundary between DR9 north (BASS/MzLS) and south (DECaLS) in the ls-dr9 layer.
DR9_NORTH_DEC_MIN_DEG = 32.375
SWEEP_RA_STEP_DEG = 10
SWEEP_DEC_STEP_DEG = 5


def specprod_root(release: Release) -> str:
    """``<release>/spectro/redux/<specprod>/``."""
    return f"{release.name}/spectro/redux/{release.specprod}/"


def zall_pix_name(specprod: str) -> str:
    """``zall-pix-<specprod>.fits``: the file name of a production's all-survey catalogue."""
    return f"zall-pix-{specprod}.fits"


def zcatalog_path(release: Release) -> str:
    """Path of the all-survey healpix redshift catalogue (HDU ZCATALOG) of ``release``.

    It lies in ``release.zcatalog_dir``, the folder discovery found it in.
    """
    return f"{specprod_root(release)}{release.zcatalog_dir}/{zall_pix_name(release.specprod)}"


def zpix_path(release: Release, survey: str, program: str) -> str:
    """Path of one survey/program healpix redshift catalogue, e.g. ``zpix-sv3-dark.fits``."""
    return f"{specprod_root(release)}{release.zcatalog_dir}/zpix-{survey}-{program}.fits"


def healpix_dir(release: Release, survey: str, program: str, coadd_pixel: int) -> str:
    """Folder of one nside-64 coadd pixel; the group folder is ``coadd_pixel // 100``."""
    group = coadd_pixel // 100
    return f"{specprod_root(release)}healpix/{survey}/{program}/{group}/{coadd_pixel}/"


def coadd_path(release: Release, survey: str, program: str, coadd_pixel: int) -> str:
    """Path of the healpix coadd file of one survey/program/nside-64 pixel."""
    folder = healpix_dir(release, survey, program, coadd_pixel)
    return f"{folder}coadd-{survey}-{program}-{coadd_pixel}.fits"


def redrock_path(release: Release, survey: str, program: str, coadd_pixel: int) -> str:
    """Path of the Redrock file beside a healpix coadd."""
    folder = healpix_dir(release, survey, program, coadd_pixel)
    return f"{folder}redrock-{survey}-{program}-{coadd_pixel}.fits"


def tilepix_path(release: Release) -> str:
    """Path of ``healpix/tilepix.fits``, the index of pixels with data."""
    return f"{specprod_root(release)}healpix/tilepix.fits"


def photsys_of_dec(dec_deg: float) -> str:
    """'N' or 'S': which DR9 imaging region the ls-dr9 layer uses at this declination."""
    return "N" if dec_deg >= DR9_NORTH_DEC_MIN_DEG else "S"


def _sweep_coord(value: int, is_dec: bool) -> str:
    if is_dec:
        return f"{'p' if value >= 0 else 'm'}{abs(value):03d}"
    return f"{value:03d}"


def sweep_name(ra_min_deg: int, dec_min_deg: int) -> str:
    """File name of the 10x5 deg sweep box whose lower corner is (ra_min, dec_min)."""
    ra_max, dec_max = ra_min_deg + SWEEP_RA_STEP_DEG, dec_min_deg + SWEEP_DEC_STEP_DEG
    return (
        f"sweep-{_sweep_coord(ra_min_deg, False)}{_sweep_coord(dec_min_deg, True)}"
        f"-{_sweep_coord(ra_max, False)}{_sweep_coord(dec_max, True)}.fits"
    )


def sweep_path(region: str, ra_min_deg: int, dec_min_deg: int) -> str:
    """``<north|south>/sweep/9.0/<sweep_name>``; ``region`` is 'north' or 'south'."""
    if region not in ("north", "south"):
        raise ValueError(f"sweep region {region!r} must be 'north' or 'south'")
    return f"{region}/sweep/9.0/{sweep_name(ra_min_deg, dec_min_deg)}"


_SWEEP_RE = re.compile(r"sweep-(\d{3})([pm])(\d{3})-(\d{3})([pm])(\d{3})\.fits$")


def parse_sweep_name(name: str) -> tuple[int, int, int, int]:
    """(ra_min, dec_min, ra_max, dec_max) in degrees from a sweep file name."""
    m = _SWEEP_RE.search(name)
    if not m:
        raise ValueError(f"{name!r} is not a sweep file name")
    ra0, s0, d0, ra1, s1, d1 = m.groups()
    return (
        int(ra0),
        int(d0) * (1 if s0 == "p" else -1),
        int(ra1),
        int(d1) * (1 if s1 == "p" else -1),
    )


def sweep_boxes_for(
    ra_min_deg: float, ra_max_deg: float, dec_min_deg: float, dec_max_deg: float
) -> list[tuple[int, int]]:
    """Lower corners (ra_min, dec_min) of every sweep box overlapping an RA/Dec rectangle.

    The rectangle must not wrap RA 0/360: split it first.
    """
    ra0 = int(math.floor(ra_min_deg / SWEEP_RA_STEP_DEG)) * SWEEP_RA_STEP_DEG
    dec0 = int(math.floor(dec_min_deg / SWEEP_DEC_STEP_DEG)) * SWEEP_DEC_STEP_DEG
    boxes = []
    ra = ra0
    while ra < ra_max_deg:
        dec = dec0
        while dec < dec_max_deg:
            if -90 <= dec < 90 and 0 <= ra < 360:
                boxes.append((ra, dec))
            dec += SWEEP_DEC_STEP_DEG
        ra += SWEEP_RA_STEP_DEG
    return boxes


SURVEY_BRICKS_PATH = "survey-bricks.fits.gz"
REGIONS = ("north", "south")
_BRICK_IMAGE_RE = re.compile(
    r"^(north|south)/coadd/(\d{3})/(\d{4}[pm]\d{3})/legacysurvey-(\d{4}[pm]\d{3})-image-([grz])\.fits\.fz$"
)


def region_of_dec(dec_deg: float) -> str:
    """'north' or 'south': the DR9 region of the ls-dr9 layer at this declination.

    Brick rows end at Dec = 32.375 exactly, so a whole brick lies in one region.
    """
    return "north" if photsys_of_dec(dec_deg) == "N" else "south"


def survey_bricks_region_path(region: str) -> str:
    """``<region>/survey-bricks-dr9-<region>.fits.gz``: the bricks one region has data for."""
    if region not in REGIONS:
        raise ValueError(f"region {region!r} must be 'north' or 'south'")
    return f"{region}/survey-bricks-dr9-{region}.fits.gz"


def brick_image_path(region: str, brickname: str, band: str) -> str:
    """``<region>/coadd/<brick[:3]>/<brick>/legacysurvey-<brick>-image-<band>.fits.fz``."""
    path = (
        f"{region}/coadd/{brickname[:3]}/{brickname}/legacysurvey-{brickname}-image-{band}.fits.fz"
    )
    parse_brick_image_path(path)  # validates region, name and band
    return path


def parse_brick_image_path(relpath: str) -> tuple[str, str, str]:
    """(region, brickname, band) of a brick image path (inverse of :func:`brick_image_path`)."""
    m = _BRICK_IMAGE_RE.match(relpath)
    if not m or m.group(3) != m.group(4) or m.group(2) != m.group(3)[:3]:
        raise ValueError(f"{relpath!r} is not a DR9 brick image path")
    return m.group(1), m.group(3), m.group(5)


def cutout_query_position(ra_deg: float, dec_deg: float) -> tuple[float, float]:
    """The position a cutout service reads from :func:`cutout_query` (7 decimals, as sent)."""
    return float(f"{ra_deg:.7f}"), float(f"{dec_deg:.7f}")


def cutout_query(
    ra_deg: float,
    dec_deg: float,
    layer: str = "ls-dr9",
    pixscale_arcsec: float = 0.262,
    bands: str = "grz",
    size_pix: int = 152,
) -> str:
    """The cutout service's query string, e.g. ``ra=..&dec=..&layer=ls-dr9&pixscale=0.262&bands=grz&size=152``."""
    return (
        f"ra={ra_deg:.7f}&dec={dec_deg:.7f}&layer={layer}"
        f"&pixscale={pixscale_arcsec:g}&bands={bands}&size={size_pix}"
    )
