"""The gnomonic (TAN) projection of FITS images with a diagonal CD matrix, RA growing leftwards.

Both the Legacy Surveys cutout service and the DR9 coadd bricks use it: CD1_1 = -pixscale,
CD2_2 = +pixscale, CD1_2 = CD2_1 = 0, so FITS pixel (x, y) is array element [y-1, x-1].
A cutout of W x H pixels has CRPIX = ((W+1)/2, (H+1)/2); a brick has CRPIX = (1800.5, 1800.5).
"""

from __future__ import annotations

import numpy as np

ARCSEC_PER_RADIAN = np.degrees(1.0) * 3600.0


def tan_sky_to_pixel(
    ra_deg: np.ndarray,
    dec_deg: np.ndarray,
    crval_ra_deg: float,
    crval_dec_deg: float,
    crpix_x: float,
    crpix_y: float,
    pixscale_arcsec: float,
) -> tuple[np.ndarray, np.ndarray]:
    """FITS pixel coordinates (x, y) of sky positions (degrees) in a TAN image."""
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    ra0, dec0 = np.radians(crval_ra_deg), np.radians(crval_dec_deg)
    cosc = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    xi = np.cos(dec) * np.sin(ra - ra0) / cosc  # radians, towards +RA
    eta = (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(ra - ra0)) / cosc
    scale = ARCSEC_PER_RADIAN / pixscale_arcsec
    return crpix_x - xi * scale, crpix_y + eta * scale


def tan_pixel_to_sky(
    x: np.ndarray,
    y: np.ndarray,
    crval_ra_deg: float,
    crval_dec_deg: float,
    crpix_x: float,
    crpix_y: float,
    pixscale_arcsec: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees of FITS pixel coordinates in a TAN image (inverse of the above)."""
    scale = np.radians(pixscale_arcsec / 3600.0)
    xi = -(np.asarray(x, dtype=np.float64) - crpix_x) * scale
    eta = (np.asarray(y, dtype=np.float64) - crpix_y) * scale
    dec0, ra0 = np.radians(crval_dec_deg), np.radians(crval_ra_deg)
    denom = np.cos(dec0) - eta * np.sin(dec0)
    ra = ra0 + np.arctan2(xi, denom)
    dec = np.arctan2(np.sin(dec0) + eta * np.cos(dec0), np.hypot(xi, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)
