"""GalSim rendering of Legacy Surveys sources: cutout stamps and fibre aperture fractions.

A source is what a sweep row describes: TYPE (PSF/REX/EXP/DEV/SER), SHAPE_R (half-light
radius, arcsec), SHAPE_E1/E2 (Tractor ellipticity, |e| = (1-q)/(1+q), i.e. GalSim's reduced
shear g), SERSIC and FLUX_G/R/Z (nanomaggies, as observed). Sersic profiles are truncated at
``TRUNCATION_RADII`` half-light radii (as Tractor's models are), with the half-light radius and
total flux referring to the truncated profile, so a large enough stamp holds all the flux.
The PSF is a Moffat (beta 3.5) of the brick's PSFSIZE FWHM.

Stamps use the cutout service's TAN WCS: CRPIX = (W+1)/2, CD1_1 = -pixscale (RA grows to
the left), CD2_2 = +pixscale, so FITS pixel (x, y) is array element [y-1, x-1].
"""

from __future__ import annotations

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


def _sersic_index(morphtype: str, sersic_n: float) -> float:
    return {"REX": 1.0, "EXP": 1.0, "DEV": 4.0}.get(morphtype, float(sersic_n))


def galaxy_profile(
    morphtype: str, sersic_n: float, shape_r_arcsec: float, e1: float, e2: float
) -> galsim.GSObject:
    """The unit-flux, unconvolved profile of one source (a delta function for PSF)."""
    if morphtype == "PSF" or shape_r_arcsec <= 0:
        return galsim.DeltaFunction(gsparams=GSPARAMS)
    n = _sersic_index(morphtype, sersic_n)
    prof = galsim.Sersic(
        n=n,
        half_light_radius=float(shape_r_arcsec),
        trunc=TRUNCATION_RADII * float(shape_r_arcsec),
        flux_untruncated=False,
        gsparams=GSPARAMS,
    )
    if morphtype == "REX" or (e1 == 0 and e2 == 0):
        return prof
    # RA grows to the left on the image, which mirrors the position angle: flip g2.
    return prof.shear(g1=float(e1), g2=-float(e2))


def psf_profile(fwhm_arcsec: float) -> galsim.GSObject:
    """The PSF: a Moffat of this FWHM."""
    return galsim.Moffat(beta=MOFFAT_BETA, fwhm=float(fwhm_arcsec), gsparams=GSPARAMS)


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

    Integrates the circularised, truncated Sersic profile against the probability that light
    from radius r lands in the fibre after the Gaussian seeing (a non-central chi-square CDF).
    """
    n = np.array(
        [_sersic_index(str(t), float(s)) for t, s in zip(morphtype, sersic_n, strict=True)]
    )
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
