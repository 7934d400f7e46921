"""One nside-16 pixel of the sample sky: its imaging sources and its spectroscopic target pool.

Everything is drawn from (seed, pixel) alone, so a pixel is the same whichever release is
generated. The imaging sources are the sweep rows; the targets are what DESI points fibres at:
galaxies (the clean sample), galaxies whose redshift fails (ZWARN, low DELTACHI2) or whose
fibre is bad, stars, quasars and sky fibres. Each target has a uniform ``rank``; a release
observes the targets with ``rank < target_fraction``, so releases nest.

Traps for the cross-match: every target's imaging source is jittered 0.1-0.3 arcsec from the
target position; some targets have a neighbour 1.2-2.0 arcsec away; some have no imaging
source at all; some sit on the pixel border with their source just across it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astroclip_core.sky.healpix import PARTITION_NSIDE, HealpixPixel, pixels_of

ARCSEC_DEG = 1.0 / 3600.0
OBJID_PIXEL_STRIDE = 1 << 16  # objid = index in pixel + stride * (pixel % 64)
DECOY_GALAXY_KINDS = ("zwarn", "low_deltachi2", "bad_fiberstatus")
# Sources fields that carry the disc structure from population.Galaxies to the renderer.
STRUCTURE_FIELDS = (
    "knot_flux_nmgy",
    "n_knots",
    "arm_flux_frac",
    "n_arms",
    "arm_pitch_deg",
    "bar_flux_frac",
    "bar_r_frac",
    "bar_axis_ratio",
    "bar_angle_rad",
)


@dataclass(frozen=True)
class Sources:
    """Imaging sources (future sweep rows). ``morphtype`` str; ``flux_nmgy`` (N, 3) observed
    g, r, z (after Milky Way extinction); ``objid`` unique within each brick."""

    ra_deg: np.ndarray
    dec_deg: np.ndarray
    morphtype: np.ndarray
    sersic_n: np.ndarray
    shape_r_arcsec: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    flux_nmgy: np.ndarray
    ls_release: np.ndarray
    brickid: np.ndarray
    brickname: np.ndarray
    objid: np.ndarray
    ebv: np.ndarray
    fibre_fraction: np.ndarray
    bulge_flux_nmgy: np.ndarray  # (N, 3) observed g, r, z of the bulge part of flux_nmgy
    bulge_r_arcsec: np.ndarray  # bulge half-light radius; 0 where a source has no bulge
    # Disc structure of extended galaxies (population.Galaxies, same names; zeros elsewhere):
    # ``knot_flux_nmgy`` (N, 3) observed, part of flux_nmgy; the rest as Galaxies documents.
    knot_flux_nmgy: np.ndarray
    n_knots: np.ndarray
    arm_flux_frac: np.ndarray
    n_arms: np.ndarray
    arm_pitch_deg: np.ndarray
    bar_flux_frac: np.ndarray
    bar_r_frac: np.ndarray
    bar_axis_ratio: np.ndarray
    bar_angle_rad: np.ndarray

    def __len__(self) -> int:
        return int(self.ra_deg.size)


@dataclass(frozen=True)
class Targets:
    """The spectroscopic target pool of one pixel; arrays of length N (``coeffs`` (N, 5)).

    ``kind``: galaxy / zwarn / low_deltachi2 / bad_fiberstatus / star / qso / sky.
    ``source``: index into the pixel's Sources, -1 when there is no imaging source.
    ``flux_nmgy``: observed total g, r, z; ``fibre_fraction``: share inside a 1.5" fibre.
    SED parameters: galaxies use ``coeffs``/``z``/``sigma_kms``; stars ``temperature_k``/
    ``sed_scale``; quasars ``z``/``sed_scale``; sky fibres none.
    """

    kind: np.ndarray
    rank: np.ndarray
    u_survey: np.ndarray
    is_repeat: np.ndarray
    targetid: np.ndarray
    ra_deg: np.ndarray
    dec_deg: np.ndarray
    source: np.ndarray
    ls_release: np.ndarray
    brickid: np.ndarray
    brickname: np.ndarray
    objid: np.ndarray
    tracer: np.ndarray
    z: np.ndarray
    coeffs: np.ndarray
    sigma_kms: np.ndarray
    is_red: np.ndarray
    log_mstar: np.ndarray
    metallicity: np.ndarray
    log_ssfr: np.ndarray
    temperature_k: np.ndarray
    sed_scale: np.ndarray
    ebv: np.ndarray
    flux_nmgy: np.ndarray
    fibre_fraction: np.ndarray
    morphtype: np.ndarray
    sersic_n: np.ndarray
    shape_r_arcsec: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    photsys: str
    line_flux: np.ndarray  # (N, n_lines) galaxies' nebular line fluxes (Galaxies.line_flux); 0 else

    def __len__(self) -> int:
        return int(self.kind.size)


@dataclass(frozen=True)
class PixelSky:
    """One nside-16 pixel: its imaging sources and target pool."""

    pixel: int
    sources: Sources
    targets: Targets


def pixel_rng(seed: int, pixel: int, stream: int) -> np.random.Generator:
    """The random stream ``stream`` of one pixel: independent of every other stream."""
    return np.random.default_rng(np.random.SeedSequence([seed, pixel, stream]))


def uniform_positions(
    rng: np.random.Generator, pixel: int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` positions uniform on the sphere inside one nside-16 pixel."""
    hp = HealpixPixel(PARTITION_NSIDE, pixel)
    ra_c, _ = hp.center_deg()
    ra_k, dec_k = hp.corners_deg()
    ra_k = ra_c + (ra_k - ra_c + 180.0) % 360.0 - 180.0  # unwrap around the centre
    pad_ra, pad_dec = 0.1 * np.ptp(ra_k), 0.1 * np.ptp(dec_k)
    sin_lo = np.sin(np.radians(max(dec_k.min() - pad_dec, -90)))
    sin_hi = np.sin(np.radians(min(dec_k.max() + pad_dec, 90)))
    ra_out, dec_out = np.empty(0), np.empty(0)
    while ra_out.size < n:
        m = 2 * (n - ra_out.size) + 16
        ra = rng.uniform(ra_k.min() - pad_ra, ra_k.max() + pad_ra, m) % 360.0
        dec = np.degrees(np.arcsin(rng.uniform(sin_lo, sin_hi, m)))
        keep = pixels_of(ra, dec) == pixel
        ra_out, dec_out = np.r_[ra_out, ra[keep]], np.r_[dec_out, dec[keep]]
    return ra_out[:n], dec_out[:n]


def offset(
    ra: np.ndarray, dec: np.ndarray, d_arcsec: np.ndarray, angle: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Positions moved by ``d_arcsec`` towards position angle ``angle`` (radians, E of N)."""
    ddec = d_arcsec * np.cos(angle) * ARCSEC_DEG
    dra = d_arcsec * np.sin(angle) * ARCSEC_DEG / np.cos(np.radians(dec))
    return (ra + dra) % 360.0, dec + ddec


def border_points(
    rng: np.random.Generator, pixel: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` points just on the pixel's border: (ra, dec, outward position angle)."""
    hp = HealpixPixel(PARTITION_NSIDE, pixel)
    ra_c, dec_c = hp.center_deg()
    ra_k, dec_k = hp.corners_deg()
    ra_k = ra_c + (ra_k - ra_c + 180.0) % 360.0 - 180.0
    edge = rng.integers(0, 4, n)
    t = rng.uniform(0.15, 0.85, n)
    ra_q = ra_k[edge] + t * (ra_k[(edge + 1) % 4] - ra_k[edge])
    dec_q = dec_k[edge] + t * (dec_k[(edge + 1) % 4] - dec_k[edge])
    # Bisect along the ray centre -> q for the exact crossing out of the pixel.
    lo, hi = np.full(n, 0.5), np.full(n, 1.5)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        inside = (
            pixels_of((ra_c + mid * (ra_q - ra_c)) % 360, dec_c + mid * (dec_q - dec_c)) == pixel
        )
        lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
    ra_b, dec_b = (ra_c + lo * (ra_q - ra_c)) % 360, dec_c + lo * (dec_q - dec_c)
    angle = np.arctan2((ra_q - ra_c) * np.cos(np.radians(dec_c)), dec_q - dec_c)
    return ra_b, dec_b, angle
