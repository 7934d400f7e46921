"""HEALPix pixels: the partitioning of every table (nside 16, nested) and DESI's nside-64 files.

Names: ``pixel`` is always an nside-16 partition pixel, ``coadd_pixel`` an nside-64 DESI
coadd pixel. This module owns the Dagster partition key format ``<release>-<pixel>``; the
Parquet tables' partition folders belong to :mod:`astroclip_core.storage`.
"""

from __future__ import annotations

from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy_healpix import HEALPix

# Partition resolution: 3,072 pixels over the sky, ~13.4 deg^2 (~3.7 deg across) each.
PARTITION_NSIDE = 16
# DESI healpix coadd files are nside 64, nested.
DESI_NSIDE = 64


def _healpix(nside: int) -> HEALPix:
    return HEALPix(nside=nside, order="nested")


@dataclass(frozen=True, order=True)
class HealpixPixel:
    """One nested HEALPix pixel."""

    nside: int
    pixel: int

    def __post_init__(self) -> None:
        if self.nside < 1 or self.nside & (self.nside - 1):
            raise ValueError(f"nside {self.nside} is not a power of two")
        if not 0 <= self.pixel < 12 * self.nside**2:
            raise ValueError(f"pixel {self.pixel} outside 0..{12 * self.nside**2 - 1}")

    def neighbours(self) -> list[HealpixPixel]:
        """The up-to-8 adjacent pixels at the same nside (no duplicates, no -1 entries)."""
        ids = _healpix(self.nside).neighbours(self.pixel).ravel()
        return [HealpixPixel(self.nside, int(p)) for p in sorted(set(ids.tolist())) if p >= 0]

    def children(self, nside: int) -> list[HealpixPixel]:
        """The pixels at a finer ``nside`` that this pixel contains (nested scheme)."""
        if nside < self.nside:
            raise ValueError(f"nside {nside} is coarser than {self.nside}")
        factor = (nside // self.nside) ** 2
        return [HealpixPixel(nside, self.pixel * factor + k) for k in range(factor)]

    def parent(self, nside: int) -> HealpixPixel:
        """The pixel at a coarser ``nside`` that contains this one (nested scheme)."""
        if nside > self.nside:
            raise ValueError(f"nside {nside} is finer than {self.nside}")
        return HealpixPixel(nside, self.pixel // (self.nside // nside) ** 2)

    def center_deg(self) -> tuple[float, float]:
        """(ra_deg, dec_deg) of the pixel centre."""
        lon, lat = _healpix(self.nside).healpix_to_lonlat(self.pixel)
        return float(lon.to_value(u.deg)), float(lat.to_value(u.deg))

    def bounding_boxes_deg(
        self, margin_arcsec: float = 0.0
    ) -> list[tuple[float, float, float, float]]:
        """RA/Dec rectangles (ra_min, ra_max, dec_min, dec_max) covering the pixel plus a margin.

        Edges are sampled (not only corners, since HEALPix edges curve); a box that would wrap
        RA 0/360 is split in two; near a pole the box spans all RA.
        """
        lon, lat = _healpix(self.nside).boundaries_lonlat(self.pixel, step=8)
        ra = lon.to_value(u.deg).ravel()
        dec = lat.to_value(u.deg).ravel()
        margin_deg = margin_arcsec / 3600.0
        dec_min = max(float(dec.min()) - margin_deg, -90.0)
        dec_max = min(float(dec.max()) + margin_deg, 90.0)
        if dec_max >= 89.9 or dec_min <= -89.9:
            return [(0.0, 360.0, dec_min, dec_max)]
        # RA margin grows as 1/cos(dec) at the box's most poleward edge.
        ra_margin = margin_deg / np.cos(np.radians(max(abs(dec_min), abs(dec_max))))
        centre = self.center_deg()[0]
        rel = (ra - centre + 180.0) % 360.0 - 180.0  # RA relative to the centre, no wrap
        lo = float(centre + rel.min() - ra_margin)
        hi = float(centre + rel.max() + ra_margin)
        if lo < 0.0:
            return [(lo + 360.0, 360.0, dec_min, dec_max), (0.0, hi, dec_min, dec_max)]
        if hi > 360.0:
            return [(lo, 360.0, dec_min, dec_max), (0.0, hi - 360.0, dec_min, dec_max)]
        return [(lo, hi, dec_min, dec_max)]

    def corners_deg(self) -> tuple[np.ndarray, np.ndarray]:
        """(ra_deg, dec_deg) arrays of the 4 pixel corners."""
        lon, lat = _healpix(self.nside).boundaries_lonlat(self.pixel, step=1)
        return lon.to_value(u.deg).ravel(), lat.to_value(u.deg).ravel()


def pixels_of(ra_deg: np.ndarray, dec_deg: np.ndarray, nside: int = PARTITION_NSIDE) -> np.ndarray:
    """Nested pixel index (int64, same shape as the inputs) of each position at ``nside``."""
    ra = np.asarray(ra_deg, dtype=np.float64)
    dec = np.asarray(dec_deg, dtype=np.float64)
    pix = _healpix(nside).lonlat_to_healpix(ra * u.deg, dec * u.deg)
    return np.asarray(pix, dtype=np.int64)


def partition_key(release: str, pixel: int) -> str:
    """Dagster partition key for one release and one nside-16 pixel, e.g. ``edr-1703``."""
    return f"{release}-{int(pixel)}"


def parse_partition_key(key: str) -> tuple[str, int]:
    """Inverse of :func:`partition_key`: ``"edr-1703"`` -> ``("edr", 1703)``."""
    release, sep, pixel = key.rpartition("-")
    if not sep or not release or not pixel.isdigit():
        raise ValueError(f"partition key {key!r} is not '<release>-<healpix>'")
    pix = int(pixel)
    HealpixPixel(PARTITION_NSIDE, pix)
    return release, pix
