"""Galaxy populations: redshifts, template mixtures, stellar masses, properties and shapes.

Each galaxy is a non-negative mix of the five kcorrect templates (solar masses formed per
template). Red (passive) galaxies are dominated by the old templates; blue (star-forming)
ones carry a young, emission-line component. True properties follow from the template data:
stellar mass = sum(c_i * MREMAIN_i), metallicity = mass-weighted METS, and
sSFR = sum(c_i * M300_i) / 300 Myr / stellar mass.

Selection makes properties correlate with redshift and brightness as in a flux-limited survey:
the stellar mass is drawn from a Schechter function truncated below at the mass that just
reaches the sample's magnitude limit at that redshift (so distant galaxies are massive).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.cosmology import Planck18

from astroclip_core.samplesky.photometry import template_photometry
from astroclip_core.samplesky.templates import load_templates

# Tracer classes of the spectroscopic targets, like DESI's bright and dark programs.
TRACERS = ("BGS", "LRG", "ELG")
TRACER_FRACTIONS = (0.6, 0.28, 0.12)
FAINT = "FAINT"  # imaging-only galaxies
# Magnitude limits (AB) per tracer: (band index, limit); BGS r < 19.5, LRG z < 20.4, ELG g < 23.4.
MAG_LIMITS: dict[str, tuple[int, float]] = {
    "BGS": (1, 19.5),
    "LRG": (2, 20.4),
    "ELG": (0, 23.4),
    FAINT: (1, 23.5),
}
# Schechter parameters of the stellar mass function: (log M*, alpha), red and blue.
SCHECHTER = {True: (10.85, -0.4), False: (10.6, -1.35)}
LOG_MASS_MAX = 12.2
BULGE_TEMPLATES = [0, 3]  # the old kcorrect templates (metal-rich, solar) make up bulges
BULGE_TO_DISC_RADIUS = 0.25  # bulge half-light radius / the galaxy's half-light radius
SFR_WINDOW_YR = 3e8


@dataclass(frozen=True)
class Galaxies:
    """N galaxies; every array has length N (``coeffs`` is (N, 5), ``flux_nmgy`` (N, 3)).

    ``flux_nmgy``: g, r, z total fluxes before Milky Way extinction. ``shape_r_arcsec``:
    half-light radius; ``e1``/``e2``: Tractor ellipticity components ((1-q)/(1+q) convention).
    ``bulge_flux_nmgy`` (N, 3): the part of ``flux_nmgy`` in a compact, round de Vaucouleurs
    bulge of half-light radius ``bulge_r_arcsec``; the rest is the disc (the galaxy's profile).
    """

    tracer: np.ndarray
    z: np.ndarray
    coeffs: np.ndarray
    is_red: np.ndarray
    log_mstar: np.ndarray
    metallicity: np.ndarray
    log_ssfr: np.ndarray
    sigma_kms: np.ndarray
    sersic_n: np.ndarray
    shape_r_arcsec: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    flux_nmgy: np.ndarray
    bulge_flux_nmgy: np.ndarray
    bulge_r_arcsec: np.ndarray

    def __len__(self) -> int:
        return int(self.z.size)


def _redshifts(rng: np.random.Generator, tracer: np.ndarray) -> np.ndarray:
    z = np.empty(tracer.size)
    for name, draw in (
        ("BGS", lambda n: rng.gamma(2.5, 0.08, n)),
        ("LRG", lambda n: rng.normal(0.68, 0.15, n)),
        ("ELG", lambda n: rng.uniform(0.6, 1.0, n)),
        (FAINT, lambda n: rng.gamma(3.0, 0.17, n)),
    ):
        sel = tracer == name
        z[sel] = draw(int(sel.sum()))
    upper = np.where(tracer == "BGS", 0.6, np.where(tracer == FAINT, 1.4, 0.995))
    lower = np.where(tracer == "LRG", 0.3, 0.01)
    return np.clip(z, lower, upper)


def _mass_fractions(rng: np.random.Generator, is_red: np.ndarray) -> np.ndarray:
    """(N, 5) fractions of the formed mass per template (t1 and t4 are the young ones)."""
    n = is_red.size
    frac = np.zeros((n, 5))
    young1 = np.where(is_red, rng.uniform(-5.0, -3.5, n), rng.uniform(-3.4, -2.1, n))
    young4 = np.where(is_red, rng.uniform(-4.0, -2.8, n), rng.uniform(-2.8, -1.6, n))
    frac[:, 1], frac[:, 4] = 10**young1, 10**young4
    old = np.where(
        is_red[:, None],
        rng.dirichlet([2.5, 0.2, 5.0], n),
        rng.dirichlet([0.5, 1.5, 2.0], n),
    )  # (N, 3) over templates 0, 2, 3
    frac[:, [0, 2, 3]] = old * (1.0 - frac[:, 1] - frac[:, 4])[:, None]
    return frac


def _schechter_log_mass(
    rng: np.random.Generator, is_red: np.ndarray, log_mass_min: np.ndarray
) -> np.ndarray:
    """Stellar masses from the Schechter function of each population, truncated below."""
    grid = np.linspace(7.0, LOG_MASS_MAX, 1041)
    out = np.empty(is_red.size)
    for red in (True, False):
        sel = is_red == red
        log_mstar, alpha = SCHECHTER[red]
        x = 10 ** (grid - log_mstar)
        cdf = np.cumsum(x ** (alpha + 1) * np.exp(-x))
        cdf /= cdf[-1]
        lo = np.interp(np.clip(log_mass_min[sel], grid[0], grid[-1]), grid, cdf)
        u = lo + (1.0 - lo) * rng.uniform(size=int(sel.sum()))
        out[sel] = np.interp(u, cdf, grid)
    return out


def _shapes(
    rng: np.random.Generator, z: np.ndarray, log_mstar: np.ndarray, is_red: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(sersic_n, half-light radius arcsec, e1, e2) from a size-mass relation and distance."""
    n = z.size
    # Size-mass relations (roughly van der Wel et al. 2014 at z~0.25): log R_e/kpc.
    log_re_kpc = np.where(
        is_red,
        0.45 + 0.6 * (log_mstar - 10.7) + rng.normal(0, 0.12, n),
        0.60 + 0.22 * (log_mstar - 10.7) + rng.normal(0, 0.15, n),
    )
    kpc_per_arcsec = Planck18.kpc_proper_per_arcmin(z).value / 60.0
    radius = np.clip(10**log_re_kpc / kpc_per_arcsec, 0.05, 30.0)
    # Discs: axis ratio from a random inclination of a thin disc; spheroids: rounder.
    cos_i = rng.uniform(0, 1, n)
    q_disc = np.sqrt(cos_i**2 * (1 - 0.2**2) + 0.2**2)
    q = np.where(is_red, rng.uniform(0.55, 1.0, n), q_disc)
    ell = (1 - q) / (1 + q)
    pa = rng.uniform(0, np.pi, n)
    sersic = np.where(is_red, 4.0, 1.0)
    return sersic, radius, ell * np.cos(2 * pa), ell * np.sin(2 * pa)


def _bulges(
    rng: np.random.Generator, frac: np.ndarray, is_red: np.ndarray, radius_arcsec: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 5) formed-mass fractions in the bulge, and the bulge half-light radius (arcsec).

    Bulges hold old stars only: a share ``beta`` of the galaxy's old metal-rich and old solar
    templates (0 and 3); passive galaxies are bulge-dominated, star-forming ones are discs with
    small bulges. So the centre is redder than the outskirts, and by how much depends on the
    redshift through the two components' different k-corrections: the colour gradient is
    information an image has and a total-flux catalogue does not.
    """
    n = is_red.size
    beta = np.where(is_red, rng.uniform(0.6, 0.95, n), rng.uniform(0.3, 0.9, n))
    bulge = np.zeros_like(frac)
    bulge[:, BULGE_TEMPLATES] = frac[:, BULGE_TEMPLATES] * beta[:, None]
    return bulge, np.maximum(BULGE_TO_DISC_RADIUS * radius_arcsec, 0.05)


def draw_galaxies(
    rng: np.random.Generator, n: int, faint: bool = False, photsys: str = "S"
) -> Galaxies:
    """Draw ``n`` spectroscopic-target galaxies (or faint imaging-only ones when ``faint``)."""
    templates = load_templates()
    if faint:
        tracer = np.full(n, FAINT)
        is_red = rng.uniform(size=n) < 0.3
    else:
        tracer = rng.choice(np.array(TRACERS), size=n, p=TRACER_FRACTIONS)
        is_red = np.where(tracer == "LRG", True, (tracer == "BGS") & (rng.uniform(size=n) < 0.45))
    z = _redshifts(rng, tracer)
    frac = _mass_fractions(rng, is_red)
    per_formed = template_photometry(photsys).fluxes(frac, z)  # (N, 3) nmgy per Msun formed
    mremain = frac @ templates.mremain  # stellar mass per Msun formed
    band = np.array([MAG_LIMITS[t][0] for t in tracer])
    limit = np.array([MAG_LIMITS[t][1] for t in tracer])
    # Stellar mass that reaches the limit: flux_limit / (flux per Msun formed) * mremain.
    flux_limit = 10 ** ((22.5 - limit) / 2.5)
    log_mass_min = np.log10(flux_limit / per_formed[np.arange(n), band] * mremain)
    log_mstar = _schechter_log_mass(rng, is_red, log_mass_min)
    formed = 10**log_mstar / mremain
    coeffs = frac * formed[:, None]
    sfr = coeffs @ templates.m300 / SFR_WINDOW_YR
    metallicity = (coeffs * templates.mremain) @ templates.mets / 10**log_mstar
    sersic, radius, e1, e2 = _shapes(rng, z, log_mstar, is_red)
    # Drawn last, so every other property keeps the values it had before bulges existed.
    bulge_frac, bulge_r = _bulges(rng, frac, is_red, radius)
    return Galaxies(
        tracer=tracer,
        z=z,
        coeffs=coeffs,
        is_red=is_red,
        log_mstar=log_mstar,
        metallicity=metallicity,
        log_ssfr=np.log10(np.maximum(sfr, 1e-30) / 10**log_mstar),
        sigma_kms=np.clip(60 + 35 * (log_mstar - 10.0) + rng.normal(0, 12, n), 30, 250),
        sersic_n=sersic,
        shape_r_arcsec=radius,
        e1=e1,
        e2=e2,
        flux_nmgy=per_formed * formed[:, None],
        bulge_flux_nmgy=template_photometry(photsys).fluxes(bulge_frac, z) * formed[:, None],
        bulge_r_arcsec=bulge_r,
    )
