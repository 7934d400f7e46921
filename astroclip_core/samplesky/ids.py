"""Legacy Surveys bricks, DESI TARGETIDs, and smooth per-position sky properties (E(B-V), PSF).

Bricks follow the DR9 scheme closely enough for joins: rows of 0.25 deg in Dec, each row cut
into equal RA slices about 0.25 deg wide; BRICKID counts from 1 at the south pole, and
BRICKNAME is ``<RA*10:04d><p|m><|Dec|*10:03d>`` of the brick centre. TARGETID packs the
imaging source like the real one: OBJID in bits 0-21, BRICKID in 22-43, RELEASE in 44-59;
sky fibres set bit 60 instead of carrying an imaging source.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

BRICK_SIZE_DEG = 0.25
N_DEC_ROWS = int(180 / BRICK_SIZE_DEG) + 1
RELEASE_SOUTH = 9010
RELEASE_NORTH = 9011
SKY_TARGET_BIT = 60


@lru_cache(maxsize=1)
def _rows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dec_center, n_bricks, first_brickid) per Dec row."""
    dec = -90.0 + BRICK_SIZE_DEG * np.arange(N_DEC_ROWS)
    n = np.maximum(1, np.round(360.0 * np.cos(np.radians(dec)) / BRICK_SIZE_DEG)).astype(np.int64)
    first = 1 + np.concatenate([[0], np.cumsum(n)[:-1]])
    return dec, n, first


@dataclass(frozen=True)
class Bricks:
    """Bricks of N positions: ids (int32), names (S8), centres in degrees."""

    brickid: np.ndarray
    brickname: np.ndarray
    ra_center_deg: np.ndarray
    dec_center_deg: np.ndarray


def bricks_of(ra_deg: np.ndarray, dec_deg: np.ndarray) -> Bricks:
    """The brick containing each position."""
    dec_c, n, first = _rows()
    ra = np.mod(np.asarray(ra_deg, dtype=np.float64), 360.0)
    row = np.clip(
        np.round((np.asarray(dec_deg) + 90.0) / BRICK_SIZE_DEG).astype(np.int64), 0, N_DEC_ROWS - 1
    )
    width = 360.0 / n[row]
    col = np.minimum((ra / width).astype(np.int64), n[row] - 1)
    ra_c = (col + 0.5) * width
    dc = dec_c[row]
    names = np.array(
        [
            f"{int(round(r * 10)) % 3600:04d}{'p' if d >= 0 else 'm'}{int(round(abs(d) * 10)):03d}"
            for r, d in zip(ra_c, dc, strict=True)
        ],
        dtype="S8",
    )
    return Bricks((first[row] + col).astype(np.int32), names, ra_c, dc)


def encode_targetid(release: np.ndarray, brickid: np.ndarray, objid: np.ndarray) -> np.ndarray:
    """DESI-style TARGETID (int64) from the Legacy Surveys (RELEASE, BRICKID, OBJID)."""
    return (
        np.asarray(objid, dtype=np.int64)
        | (np.asarray(brickid, dtype=np.int64) << 22)
        | (np.asarray(release, dtype=np.int64) << 44)
    )


def sky_targetid(brickid: np.ndarray, objid: np.ndarray) -> np.ndarray:
    """TARGETID of a sky fibre: the sky bit set, no imaging release."""
    return (1 << SKY_TARGET_BIT) | encode_targetid(np.zeros_like(brickid), brickid, objid)


def source_key(brickid: np.ndarray, objid: np.ndarray) -> np.ndarray:
    """(N,) int64 key of a sweep source: BRICKID in the high 32 bits, OBJID in the low ones."""
    return np.asarray(brickid).astype(np.int64) << 32 | np.asarray(objid).astype(np.int64)


def hash_uniform(seed: int, keys: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic uniform [0, 1) numbers from integer ``keys`` (e.g. brick ids)."""
    x = np.asarray(keys, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    x ^= np.uint64((seed * 1000003 + salt * 7919) & 0xFFFFFFFFFFFFFFFF)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def ebv_at(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """A smooth, low Galactic reddening E(B-V) map (0.01-0.06 mag)."""
    ra, dec = np.radians(np.asarray(ra_deg)), np.radians(np.asarray(dec_deg))
    return (
        0.035
        + 0.015 * np.sin(3.1 * ra + 0.7) * np.cos(2.3 * dec - 0.4)
        + 0.008 * np.sin(11.0 * dec + 5.0 * ra)
    )


@dataclass(frozen=True)
class BrickConditions:
    """Per-brick imaging conditions: PSF FWHM (arcsec) and 5-sigma PSF depth (AB mag), (N, 3)."""

    psf_fwhm_arcsec: np.ndarray
    psfdepth_mag: np.ndarray
    nobs: np.ndarray


# Median coadd PSF FWHM (arcsec) and 5-sigma PSF depth (AB) per band g, r, z. South: DECaLS
# seeing g ~1.5", r ~1.3", z ~1.2" and depths 24.7 / 23.9 / 23.0 (Dey et al. 2019; NOIRLab
# Astro Data Lab's DECaLS DR9 page). North: BASS g, r to 24.4 / 23.9 and MzLS z to 23.0 (Data
# Lab's BASS and MzLS pages), with BASS's poorer and MzLS's better seeing (Dey et al. 2019).
PSF_FWHM_ARCSEC = {"S": (1.5, 1.3, 1.2), "N": (1.7, 1.5, 1.1)}
PSF_DEPTH_MAG = {"S": (24.7, 23.9, 23.0), "N": (24.4, 23.9, 23.0)}


def brick_conditions(seed: int, brickid: np.ndarray, photsys: np.ndarray) -> BrickConditions:
    """Seeing and depth of each brick, drawn from (seed, brickid) about the DR9 medians.

    FWHM within +-15% of :data:`PSF_FWHM_ARCSEC` (one seeing factor for the three bands), depth
    within +-0.25 mag of :data:`PSF_DEPTH_MAG`, independent of the seeing (the surveys
    lengthened exposures in poor seeing to keep the depth uniform, Dey et al. 2019).
    """
    brickid = np.asarray(brickid)
    u_seeing = hash_uniform(seed, brickid, 1)
    u_depth = hash_uniform(seed, brickid, 2)
    north = (np.asarray(photsys) == b"N")[:, None]
    fwhm = np.where(north, [PSF_FWHM_ARCSEC["N"]], [PSF_FWHM_ARCSEC["S"]])
    fwhm = fwhm * (0.85 + 0.3 * u_seeing)[:, None]
    base = np.where(north, [PSF_DEPTH_MAG["N"]], [PSF_DEPTH_MAG["S"]])
    depth = base + 0.5 * (u_depth[:, None] - 0.5)
    nobs = 2 + (4 * hash_uniform(seed, brickid, 3)).astype(np.int16)
    return BrickConditions(fwhm, depth, np.repeat(nobs[:, None], 3, axis=1))


@lru_cache(maxsize=1)
def brick_table() -> dict[str, np.ndarray]:
    """Every brick of the grid as ``survey-bricks`` columns (upper-case names), by BRICKID.

    RA1/RA2 and DEC1/DEC2 are the bounds :func:`bricks_of` assigns positions by; BRICKQ is 0.
    """
    dec_c, n, first = _rows()
    row = np.repeat(np.arange(N_DEC_ROWS), n)
    col = np.arange(row.size) - np.repeat(first - 1, n)
    width = 360.0 / n[row]
    ra_c, dec = (col + 0.5) * width, dec_c[row]
    ra10 = (np.round(ra_c * 10).astype(np.int64) % 3600).astype("U4")
    dec10 = np.round(np.abs(dec) * 10).astype(np.int64).astype("U3")
    names = np.char.add(
        np.char.add(np.char.zfill(ra10, 4), np.where(dec >= 0, "p", "m")), np.char.zfill(dec10, 3)
    )
    return {
        "BRICKNAME": names,
        "BRICKID": (first[row] + col).astype(np.int32),
        "BRICKQ": np.zeros(row.size, dtype=np.int16),
        "BRICKROW": row.astype(np.int32),
        "BRICKCOL": col.astype(np.int32),
        "RA": ra_c,
        "DEC": dec,
        "RA1": col * width,
        "RA2": (col + 1) * width,
        "DEC1": np.maximum(dec - BRICK_SIZE_DEG / 2, -90.0),
        "DEC2": np.minimum(dec + BRICK_SIZE_DEG / 2, 90.0),
    }
