"""GalSim rendering of Legacy Surveys sources: cutout stamps and fibre aperture fractions.

A source is what a sweep row describes: TYPE (PSF/REX/EXP/DEV/SER), SHAPE_R (half-light
radius, arcsec), SHAPE_E1/E2 (Tractor ellipticity, |e| = (1-q)/(1+q), i.e. GalSim's reduced
shear g), SERSIC and FLUX_G/R/Z (nanomaggies, as observed). As in Tractor (``EllipseE``), SHAPE_R is the
half-light radius along the major axis and the minor axis is q = (1-|e|)/(1+|e|) times it.
Sersic profiles are truncated at ``TRUNCATION_RADII`` half-light radii (as Tractor's models
are), with the half-light radius and total flux referring to the truncated profile, so a large
enough stamp holds all the flux. The PSF is a Moffat (beta 3.5) of the brick's PSFSIZE FWHM.

A star-forming galaxy's disc can carry more than the smooth profile the catalogue describes
(:func:`structured_disc`): point-like star-forming clumps, spiral arms and a bar, laid out in
the disc plane and projected with the disc's axis ratio and position angle.

Stamps use the cutout service's TAN WCS: CRPIX = (W+1)/2, CD1_1 = -pixscale (RA grows to
the left), CD2_2 = +pixscale, so FITS pixel (x, y) is array element [y-1, x-1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import galsim
import numpy as np
from scipy.integrate import trapezoid
from scipy.special import gammaincinv
from scipy.stats import ncx2

from astroclip_core.sky.tan import tan_sky_to_pixel

TRUNCATION_RADII = 8.0
MOFFAT_BETA = 3.5
FIBRE_DIAMETER_ARCSEC = 1.5
FIBRE_SEEING_FWHM_ARCSEC = 1.0  # the Legacy Surveys FIBERFLUX convention
GSPARAMS = galsim.GSParams(maximum_fft_size=8192, folding_threshold=5e-3)
ARM_KNOTS = 24  # Gaussian knots per spiral arm (blobs)
ARM_WIDTH_FRAC = 0.2  # their sigma / their radius (arms widen outwards)


@dataclass(frozen=True)
class SourceShapes:
    """Shapes and fluxes of N sources: ``flux_nmgy`` (N, nbands) in the stamp's band order."""

    ra_deg: np.ndarray
    dec_deg: np.ndarray
    morphtype: np.ndarray  # str: PSF / REX / EXP / DEV / SER
    sersic_n: np.ndarray
    shape_r_arcsec: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    flux_nmgy: np.ndarray


def sersic_index(morphtype: str, sersic_n: float) -> float:
    """The Sersic index a TYPE draws with: 1 for REX/EXP, 4 for DEV, SERSIC for SER."""
    return {"REX": 1.0, "EXP": 1.0, "DEV": 4.0}.get(morphtype, float(sersic_n))


def galaxy_profile(
    morphtype: str, sersic_n: float, shape_r_arcsec: float, e1: float, e2: float
) -> galsim.GSObject:
    """The unit-flux, unconvolved profile of one source (a delta function for PSF)."""
    if morphtype == "PSF" or shape_r_arcsec <= 0:
        return galsim.DeltaFunction(gsparams=GSPARAMS)
    n = sersic_index(morphtype, sersic_n)
    prof = galsim.Sersic(
        n=n,
        half_light_radius=float(shape_r_arcsec),
        trunc=TRUNCATION_RADII * float(shape_r_arcsec),
        flux_untruncated=False,
        gsparams=GSPARAMS,
    )
    if morphtype == "REX" or (e1 == 0 and e2 == 0):
        return prof
    return project(prof, e1, e2)


def project(prof: galsim.GSObject, e1: float, e2: float) -> galsim.GSObject:
    """``prof`` (round, or laid out in a disc plane) seen with Tractor ellipticity (e1, e2).

    A shear of |g| = |e| keeps the area, so its major axis is 1/sqrt(q) of the radius; the
    dilation by sqrt(q) makes the major axis the radius and the minor axis q times it, as
    Tractor's SHAPE_R is. RA grows to the left on the image, which mirrors the position angle:
    g2 is flipped.
    """
    g = math.hypot(e1, e2)
    if g == 0:
        return prof
    q = (1.0 - g) / (1.0 + g)
    return prof.dilate(math.sqrt(q)).shear(g1=float(e1), g2=-float(e2))


@dataclass(frozen=True)
class DiscStructure:
    """Clumps, spiral arms and a bar of one disc (population.Galaxies documents the fields).

    ``seed`` places the clumps and the arm knots (the same for every band).
    """

    n_knots: int = 0
    arm_flux_frac: float = 0.0
    n_arms: int = 0
    arm_pitch_deg: float = 0.0
    bar_flux_frac: float = 0.0
    bar_r_frac: float = 0.0
    bar_axis_ratio: float = 0.0
    bar_angle_rad: float = 0.0
    seed: int = 0

    @property
    def is_smooth(self) -> bool:
        """True when the disc has none of the three."""
        return self.n_knots == 0 and self.n_arms == 0 and self.bar_flux_frac == 0


def _exp_disc_radii(rng: np.random.Generator, n: int, radius_arcsec: float) -> np.ndarray:
    """``n`` radii drawn from an exponential disc's light (r e^(-r/h), h = R_e / 1.678)."""
    return np.minimum(rng.gamma(2.0, radius_arcsec / 1.678, n), 3.0 * radius_arcsec)


@dataclass(frozen=True)
class Blobs:
    """N Gaussian blobs of a projected disc (clumps, arm segments), in a source's own frame.

    ``dx_arcsec``/``dy_arcsec`` (N,): offsets from the source centre along the image's +x
    (column) and +y (row) axes; ``cov_arcsec2`` (N, 2, 2); ``flux_nmgy`` (N, nbands).
    """

    dx_arcsec: np.ndarray
    dy_arcsec: np.ndarray
    cov_arcsec2: np.ndarray
    flux_nmgy: np.ndarray

    def __len__(self) -> int:
        return int(self.dx_arcsec.size)


def _in_plane_blobs(
    rng: np.random.Generator, s: DiscStructure, radius_arcsec: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, sigma, weight) arcsec of the clumps then the arm knots, in the disc plane.

    Clumps: points following the disc's light, exponential brightnesses (a few bright
    complexes, many faint ones), a twentieth of R_e wide; their weights sum to 1. Arms:
    knots along phi = phi0 + ln(r)/tan(pitch), evenly in ln r from 0.4 to 2.5 R_e, carrying
    the exponential disc's light there (r^2 e^(-r/h) per step in ln r), ``ARM_WIDTH_FRAC`` of
    their radius wide so the arms look continuous where resolved; their weights sum to 1.
    """
    r = _exp_disc_radii(rng, s.n_knots, radius_arcsec)
    phi = rng.uniform(0, 2 * np.pi, s.n_knots)
    w_knot = rng.exponential(1.0, s.n_knots)
    w_knot /= max(w_knot.sum(), 1e-300)
    knots = (r * np.cos(phi), r * np.sin(phi), np.full(s.n_knots, 0.05 * radius_arcsec), w_knot)
    if s.n_arms == 0:
        return knots
    h = radius_arcsec / 1.678
    ln_r = np.linspace(np.log(0.4 * radius_arcsec), np.log(2.5 * radius_arcsec), ARM_KNOTS)
    r_arm = np.tile(np.exp(ln_r), s.n_arms)
    winding = math.copysign(1.0, s.arm_pitch_deg) / math.tan(math.radians(abs(s.arm_pitch_deg)))
    phi0 = rng.uniform(0, 2 * np.pi)
    arm = np.repeat(np.arange(s.n_arms), ARM_KNOTS)
    phi_arm = phi0 + 2 * np.pi * arm / s.n_arms + winding * (np.tile(ln_r, s.n_arms) - ln_r[0])
    w_arm = r_arm**2 * np.exp(-r_arm / h)
    w_arm /= w_arm.sum()
    return (
        np.r_[knots[0], r_arm * np.cos(phi_arm)],
        np.r_[knots[1], r_arm * np.sin(phi_arm)],
        np.r_[knots[2], ARM_WIDTH_FRAC * r_arm],
        np.r_[knots[3], w_arm],
    )


def _projection(e1: float, e2: float) -> np.ndarray:
    """(2, 2) matrix that :func:`project` applies to positions in the disc plane."""
    g = math.hypot(e1, e2)
    if g == 0:
        return np.eye(2)
    q = (1.0 - g) / (1.0 + g)
    return math.sqrt(q) * galsim.Shear(g1=float(e1), g2=-float(e2)).getMatrix()


def _bar(s: DiscStructure, radius_arcsec: float) -> galsim.GSObject:
    """Unit-flux bar: an elongated n = 0.5 Sersic in the disc plane."""
    bar = galsim.Sersic(
        n=0.5, half_light_radius=max(s.bar_r_frac * radius_arcsec, 0.02), gsparams=GSPARAMS
    )
    return bar.shear(galsim.Shear(q=float(s.bar_axis_ratio), beta=s.bar_angle_rad * galsim.radians))


def structured_disc(
    sersic_n: float,
    radius_arcsec: float,
    e1: float,
    e2: float,
    disc_flux_nmgy: np.ndarray,
    knot_flux_nmgy: np.ndarray,
    s: DiscStructure,
) -> tuple[list[galsim.GSObject | None], Blobs]:
    """A disc with its clumps, arms and bar, projected: (per band GalSim profile, blobs).

    The GalSim part is the smooth Sersic plus the bar; the clumps (``knot_flux_nmgy``) and the
    arm knots are Gaussian blobs, drawn directly and convolved with the PSF image (a sum of
    ~100 shifted GalSim objects would take 20-40x longer to draw). Arms and bar take their
    fractions of ``disc_flux_nmgy`` from the smooth profile, so the total of both parts is
    ``disc_flux_nmgy + knot_flux_nmgy`` in every band.
    """
    rng = np.random.default_rng(s.seed)
    smooth = galsim.Sersic(
        n=float(sersic_n),
        half_light_radius=float(radius_arcsec),
        trunc=TRUNCATION_RADII * float(radius_arcsec),
        flux_untruncated=False,
        gsparams=GSPARAMS,
    )
    bar = _bar(s, radius_arcsec) if s.bar_flux_frac > 0 else None
    f_arm = s.arm_flux_frac if s.n_arms > 0 else 0.0
    f_bar = s.bar_flux_frac if bar is not None else 0.0
    profiles: list[galsim.GSObject | None] = []
    for disc in np.asarray(disc_flux_nmgy, dtype=np.float64):
        parts = [smooth.withFlux(float(disc) * (1.0 - f_arm - f_bar))]
        if bar is not None:
            parts.append(bar.withFlux(float(disc) * f_bar))
        total = sum(p.flux for p in parts)
        profiles.append(
            None if total == 0 else project(galsim.Add(parts, gsparams=GSPARAMS), e1, e2)
        )
    x, y, sigma, weight = _in_plane_blobs(rng, s, radius_arcsec)
    m = _projection(e1, e2)
    xy = m @ np.vstack([x, y])  # (2, N) on the image axes
    cov = sigma[:, None, None] ** 2 * (m @ m.T)[None]  # (N, 2, 2)
    is_knot = np.arange(x.size) < s.n_knots
    flux = np.where(
        is_knot[:, None],
        weight[:, None] * np.asarray(knot_flux_nmgy, dtype=np.float64)[None, :],
        weight[:, None] * f_arm * np.asarray(disc_flux_nmgy, dtype=np.float64)[None, :],
    )  # (N, nbands)
    return profiles, Blobs(xy[0], xy[1], cov, flux)


def draw_blobs(
    blobs: Blobs, x0: float, y0: float, shape: tuple[int, int], pixscale_arcsec: float
) -> np.ndarray:
    """(nbands, *shape) float64 image of ``blobs`` around 0-based array position (x0, y0).

    Each blob is its Gaussian widened by the pixel (variance + 1/12 px^2), sampled at pixel
    centres within 4 sigma and normalised to its flux over the part on the image (a source's
    stamp reaches 8 R_e, its blobs about 3 R_e, so none is cut in practice).
    """
    nb = blobs.flux_nmgy.shape[1] if len(blobs) else 0
    out = np.zeros((nb, *shape))
    for k in range(len(blobs)):
        cov = blobs.cov_arcsec2[k] / pixscale_arcsec**2 + np.eye(2) / 12.0
        cx, cy = (
            x0 + blobs.dx_arcsec[k] / pixscale_arcsec,
            y0 + blobs.dy_arcsec[k] / pixscale_arcsec,
        )
        half = int(math.ceil(4.0 * math.sqrt(max(cov[0, 0], cov[1, 1]))))
        xa, xb = max(int(round(cx)) - half, 0), min(int(round(cx)) + half + 1, shape[1])
        ya, yb = max(int(round(cy)) - half, 0), min(int(round(cy)) + half + 1, shape[0])
        if xa >= xb or ya >= yb:
            continue
        dy, dx = np.mgrid[ya:yb, xa:xb]
        dx, dy = dx - cx, dy - cy
        inv = np.linalg.inv(cov)
        patch = np.exp(-0.5 * (inv[0, 0] * dx**2 + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy**2))
        patch /= patch.sum() if patch.sum() > 0 else 1.0
        out[:, ya:yb, xa:xb] += blobs.flux_nmgy[k][:, None, None] * patch[None]
    return out


def psf_profile(fwhm_arcsec: float) -> galsim.GSObject:
    """The PSF: a Moffat of this FWHM."""
    return galsim.Moffat(beta=MOFFAT_BETA, fwhm=float(fwhm_arcsec), gsparams=GSPARAMS)


def psf_noise_area_pix(fwhm_arcsec: np.ndarray, pixscale_arcsec: float) -> np.ndarray:
    """Noise-equivalent area 1 / sum(psf^2) of :func:`psf_profile`, pixels.

    A point source's flux error is the pixel sigma times sqrt(this), which is how PSFDEPTH
    relates to the image noise. For a Moffat of scale alpha: pi alpha^2 (2 beta - 1)/(beta - 1)^2.
    """
    alpha = np.asarray(fwhm_arcsec, dtype=np.float64) / (
        2.0 * math.sqrt(2.0 ** (1.0 / MOFFAT_BETA) - 1.0)
    )
    area = math.pi * alpha**2 * (2 * MOFFAT_BETA - 1) / (MOFFAT_BETA - 1) ** 2
    return area / pixscale_arcsec**2


def sky_to_pixel(
    ra_deg: np.ndarray,
    dec_deg: np.ndarray,
    ra0_deg: float,
    dec0_deg: float,
    pixscale_arcsec: float,
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray]:
    """FITS pixel coordinates (x, y) of positions in a TAN stamp centred on (ra0, dec0)."""
    return tan_sky_to_pixel(
        ra_deg, dec_deg, ra0_deg, dec0_deg, (width + 1) / 2.0, (height + 1) / 2.0, pixscale_arcsec
    )


def render_sources(
    sources: SourceShapes,
    ra0_deg: float,
    dec0_deg: float,
    size_pix: int,
    pixscale_arcsec: float,
    psf_fwhm_arcsec: np.ndarray,
) -> np.ndarray:
    """Noiseless (nbands, size, size) float32 stamp of ``sources``, PSF FWHM per band."""
    nbands = sources.flux_nmgy.shape[1] if sources.flux_nmgy.ndim == 2 else len(psf_fwhm_arcsec)
    out = np.zeros((nbands, size_pix, size_pix), dtype=np.float32)
    if sources.ra_deg.size == 0:
        return out
    x, y = sky_to_pixel(
        sources.ra_deg, sources.dec_deg, ra0_deg, dec0_deg, pixscale_arcsec, size_pix, size_pix
    )
    for b in range(nbands):
        image = galsim.ImageF(size_pix, size_pix, scale=pixscale_arcsec)
        psf = psf_profile(psf_fwhm_arcsec[b])
        for i in range(sources.ra_deg.size):
            flux = float(sources.flux_nmgy[i, b])
            if flux == 0.0:
                continue
            prof = galaxy_profile(
                str(sources.morphtype[i]),
                float(sources.sersic_n[i]),
                float(sources.shape_r_arcsec[i]),
                float(sources.e1[i]),
                float(sources.e2[i]),
            )
            galsim.Convolve(prof, psf, gsparams=GSPARAMS).withFlux(flux).drawImage(
                image=image, center=galsim.PositionD(float(x[i]), float(y[i])), add_to_image=True
            )
        out[b] = image.array
    return out


def _aperture_of_offset_psf(offset_arcsec: np.ndarray) -> np.ndarray:
    """Fraction of a Gaussian PSF centred ``offset`` from the fibre centre that enters it."""
    sigma = FIBRE_SEEING_FWHM_ARCSEC / (2 * np.sqrt(2 * np.log(2)))
    radius = FIBRE_DIAMETER_ARCSEC / 2
    return ncx2.cdf((radius / sigma) ** 2, df=2, nc=(offset_arcsec / sigma) ** 2)


def fibre_fraction(
    morphtype: np.ndarray, sersic_n: np.ndarray, shape_r_arcsec: np.ndarray
) -> np.ndarray:
    """Fraction of each source's flux inside a 1.5 arcsec fibre under 1 arcsec seeing.

    ``shape_r_arcsec``: the circularised half-light radius (SHAPE_R * sqrt(q) of an elliptical
    source, whose light within a centred circle this approximates).

    Integrates the circularised, truncated Sersic profile against the probability that light
    from radius r lands in the fibre after the Gaussian seeing (a non-central chi-square CDF).
    """
    n = np.array([sersic_index(str(t), float(s)) for t, s in zip(morphtype, sersic_n, strict=True)])
    radius = np.asarray(shape_r_arcsec, dtype=np.float64)
    point = (np.asarray(morphtype).astype(str) == "PSF") | (radius <= 0)
    out = np.full(n.size, float(_aperture_of_offset_psf(np.array(0.0))))
    ext = ~point
    if not ext.any():
        return out
    u = np.concatenate(
        [np.linspace(0, 0.05, 20, endpoint=False), np.geomspace(0.05, TRUNCATION_RADII, 300)]
    )
    r = radius[ext, None] * u[None, :]  # (N_ext, n_r) arcsec
    b_n = gammaincinv(2 * n[ext], 0.5)[:, None]
    weight = np.exp(-b_n * u[None, :] ** (1 / n[ext, None])) * r  # surface brightness * r
    captured = trapezoid(weight * _aperture_of_offset_psf(r), r, axis=1)
    out[ext] = captured / trapezoid(weight, r, axis=1)
    return out
