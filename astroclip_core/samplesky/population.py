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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from astropy.cosmology import Planck18

from astroclip_core.samplesky.nebular import draw_nebular
from astroclip_core.samplesky.photometry import line_nanomaggies, template_photometry
from astroclip_core.samplesky.templates import halpha_continuum, load_templates

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
# n(z) per tracer: (kind, a, b, z_min, z_max), a gamma(shape a, scale b) or normal(mean a, sd b)
# truncated to [z_min, z_max]. Shaped like DESI's: BGS Bright peaks near z 0.2 and ends near 0.6
# (Hahn et al. 2023, AJ 165, 253); LRGs fill 0.4-1.1 with a broad peak near 0.8 (Zhou et al.
# 2023, AJ 165, 58); ELGs 0.6-1.6, peaking near 1.1 (Raichoor et al. 2023, AJ 165, 126); above
# z ~ 1.1 only [O II] remains in the spectrum (in the z arm).
REDSHIFT_DISTRIBUTIONS: dict[str, tuple[str, float, float, float, float]] = {
    "BGS": ("gamma", 5.0, 0.045, 0.01, 0.6),
    "LRG": ("normal", 0.76, 0.19, 0.3, 1.1),
    "ELG": ("normal", 1.1, 0.3, 0.6, 1.6),
    FAINT: ("gamma", 3.0, 0.17, 0.01, 1.4),
}
# Schechter parameters of the stellar mass function: (log M*, alpha), red and blue.
SCHECHTER = {True: (10.85, -0.4), False: (10.6, -1.35)}
LOG_MASS_MAX = 12.2
BULGE_TEMPLATES = [0, 3]  # the old kcorrect templates (metal-rich, solar) make up bulges
BULGE_TO_DISC_RADIUS = 0.25  # bulge half-light radius / the galaxy's half-light radius
SFR_WINDOW_YR = 3e8
# Size-mass-redshift relation of van der Wel et al. 2014 (ApJ 788, 28; 3D-HST+CANDELS, rest
# 5000 A, semi-major axis): per population (log A at the pivot, mass slope alpha, redshift
# exponent beta of R_e ~ (1+z)^beta, intrinsic scatter dex), from their z = 0.25 fits (Table 1)
# and evolution fits: early types log A 0.60, alpha 0.75, beta -1.48, 0.10 dex; late types
# 0.86, 0.25, -0.75, 0.16 dex; pivot mass 5e10 Msun (log 10.7).
SIZE_MASS_VDW14: dict[bool, tuple[float, float, float, float]] = {
    True: (0.60, 0.75, -1.48, 0.10),
    False: (0.86, 0.25, -0.75, 0.16),
}
SIZE_PIVOT_LOG_MASS = 10.7
SIZE_PIVOT_Z = 0.25
MAX_RADIUS_ARCSEC = 30.0  # caps the rare z~0.01 giants (a 60" stamp would take seconds to draw)
# Structure of star-forming discs beyond the smooth profile (drawn by _structure; the README's
# "Images" section gives the sources). Bars: Masters et al. 2011 (Galaxy Zoo 2) find bars in
# ~30% of z < 0.06 discs; Sheth et al. 2008 see the (strong) bar fraction fall to ~10% by
# z ~ 0.84; Gadotti 2009 gives bar-to-total ~0.1, bar Sersic n ~0.5, in-plane axis ratio ~0.3.
BAR_FRACTION_LOW_Z, BAR_FRACTION_Z084 = 0.30, 0.10
BAR_FLUX_RANGE = (0.05, 0.15)  # share of the disc's smooth light moved into the bar
BAR_AXIS_RATIO_RANGE = (0.25, 0.4)
BAR_RADIUS_RANGE = (0.3, 0.6)  # bar half-light radius (along its length) / disc R_e
# Spiral arms: about two thirds of massive star-forming discs show them (Galaxy Zoo 2, Willett
# et al. 2013); two arms are the most common, then three and four (Hart et al. 2016); pitch
# angles ~20 +- 6 deg (Davis et al. 2014, Hart et al. 2017); arms hold 10-25% of the disc's
# optical light (arm-interarm contrasts of 1.5-3, Elmegreen et al. 2011).
SPIRAL_FRACTION_MASSIVE, SPIRAL_FRACTION_DWARF = 0.67, 0.3
ARM_COUNTS, ARM_COUNT_PROBS = (2, 3, 4), (0.55, 0.25, 0.20)
ARM_PITCH_DEG = (20.0, 6.0, 8.0, 40.0)  # mean, sd, min, max
ARM_FLUX_RANGE = (0.10, 0.25)
# Star-forming clumps (HII-region complexes): 5-20% of the young light of star-forming galaxies
# sits in clumps (Guo et al. 2015, CANDELS); they carry the young templates' colours and lines.
KNOT_YOUNG_SHARE_RANGE = (0.05, 0.20)
KNOT_COUNT_RANGE = (5, 30)
FEATURE_MIN_LOG_MASS = 9.5  # below this, star-forming galaxies are dwarfs/irregulars: no bars
YOUNG_TEMPLATES = [1, 4]  # the kcorrect templates of recent star formation


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
    # Nebular emission (samplesky/nebular.py): ``line_flux`` (N, n_lines) rest-frame integrated
    # fluxes at 10 pc of templates.NEBULAR_LINES (included in ``flux_nmgy``); intrinsic log
    # ratios [N II]/H alpha, [O III]/H beta, [S II]/H alpha, [O II]/H beta; nebular E(B-V);
    # observed rest H alpha EW (A); share of H alpha from an AGN.
    line_flux: np.ndarray
    log_n2_ha: np.ndarray
    log_o3_hb: np.ndarray
    log_s2_ha: np.ndarray
    log_o2_hb: np.ndarray
    ebv_gas: np.ndarray
    ew_halpha_angstrom: np.ndarray
    agn_fraction: np.ndarray
    # Structure of star-forming discs (:func:`_structure`); zeros where a galaxy has none.
    # ``knot_flux_nmgy`` (N, 3): part of ``flux_nmgy`` in ``n_knots`` clumps; arm and bar
    # fractions are shares of the disc light left after bulge and knots. ``arm_pitch_deg`` is
    # signed (the sign is the winding sense); ``bar_angle_rad`` is in the disc plane, from
    # its major axis; ``bar_r_frac`` is the bar half-light radius / ``shape_r_arcsec``.
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
        return int(self.z.size)


def _truncated(
    rng: np.random.Generator, draw: Callable[[int], np.ndarray], n: int, lo: float, hi: float
) -> np.ndarray:
    """``n`` values of ``draw`` inside [lo, hi], redrawing those outside (no pile-up at edges)."""
    out = draw(n)
    bad = (out < lo) | (out > hi)
    while bad.any():
        out[bad] = draw(int(bad.sum()))
        bad = (out < lo) | (out > hi)
    return out


def _redshifts(rng: np.random.Generator, tracer: np.ndarray) -> np.ndarray:
    """Redshifts per tracer, shaped like DESI's n(z) (:data:`REDSHIFT_DISTRIBUTIONS`)."""
    z = np.empty(tracer.size)
    for name, (kind, a, b, lo, hi) in REDSHIFT_DISTRIBUTIONS.items():
        sel = tracer == name

        def draw(m: int, kind: str = kind, a: float = a, b: float = b) -> np.ndarray:
            return rng.gamma(a, b, m) if kind == "gamma" else rng.normal(a, b, m)

        z[sel] = _truncated(rng, draw, int(sel.sum()), lo, hi)
    return z


def _mass_fractions(rng: np.random.Generator, is_red: np.ndarray) -> np.ndarray:
    """(N, 5) fractions of the formed mass per template (t1 and t4 are the young ones).

    Red (passive) mixes are mostly template 3 (old, solar) with little young light: their median
    rest spectrum matches the real DESI LRG stack (tests/data/desi/stack-LRG.fits) within 8% in
    every 100 A bin over 3600-6900 A (rms 3.4%; tests/test_samplesky_spectra_realism.py). A
    least-squares fit of the stack with the five templates gives the same mix (~98% template 3).
    """
    n = is_red.size
    frac = np.zeros((n, 5))
    young1 = np.where(is_red, rng.uniform(-5.5, -4.2, n), rng.uniform(-3.4, -2.1, n))
    young4 = np.where(is_red, rng.uniform(-3.8, -2.8, n), rng.uniform(-2.8, -1.6, n))
    frac[:, 1], frac[:, 4] = 10**young1, 10**young4
    old = np.where(
        is_red[:, None],
        rng.dirichlet([0.3, 0.3, 8.0], n),
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
    """(sersic_n, half-light radius arcsec, e1, e2) from a size-mass-redshift relation.

    The radius is the semi-major-axis half-light radius (Tractor's SHAPE_R convention, and
    van der Wel et al. 2014's): log R_e/kpc = log A + alpha (log M - 10.7) + beta log((1+z)/1.25)
    with the z = 0.25 fits and the (1+z)^beta evolution of :data:`SIZE_MASS_VDW14`, plus the
    paper's intrinsic scatter, converted to arcsec at the galaxy's angular-diameter distance.
    """
    n = z.size
    log_re_kpc = np.empty(n)
    for red in (True, False):
        sel = is_red == red
        log_a, alpha, beta, scatter = SIZE_MASS_VDW14[bool(red)]
        log_re_kpc[sel] = (
            log_a
            + alpha * (log_mstar[sel] - SIZE_PIVOT_LOG_MASS)
            + beta * np.log10((1.0 + z[sel]) / (1.0 + SIZE_PIVOT_Z))
            + rng.normal(0, scatter, int(sel.sum()))
        )
    kpc_per_arcsec = Planck18.kpc_proper_per_arcmin(z).value / 60.0
    radius = np.clip(10**log_re_kpc / kpc_per_arcsec, 0.05, MAX_RADIUS_ARCSEC)
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


def _structure(
    rng: np.random.Generator,
    is_red: np.ndarray,
    log_mstar: np.ndarray,
    z: np.ndarray,
    young_flux_nmgy: np.ndarray,
) -> dict[str, np.ndarray]:
    """Clumps, spiral arms and bars of star-forming galaxies (the constants above give sources).

    ``young_flux_nmgy`` (N, 3): the light of the young templates and the nebular lines, of
    which the clumps take a share. Passive galaxies get none of the three.
    """
    n = z.size
    sf = ~np.asarray(is_red)
    massive = log_mstar >= FEATURE_MIN_LOG_MASS
    # Bar fraction falls linearly from its low-z value (z <= 0.2) to Sheth et al.'s z = 0.84.
    slope = (BAR_FRACTION_Z084 - BAR_FRACTION_LOW_Z) / (0.84 - 0.2)
    p_bar = np.clip(BAR_FRACTION_LOW_Z + slope * (z - 0.2), BAR_FRACTION_Z084, BAR_FRACTION_LOW_Z)
    barred = sf & massive & (rng.uniform(size=n) < p_bar)
    p_spiral = np.where(massive, SPIRAL_FRACTION_MASSIVE, SPIRAL_FRACTION_DWARF)
    spiral = sf & (rng.uniform(size=n) < p_spiral)
    mean, sd, lo, hi = ARM_PITCH_DEG
    pitch = np.clip(rng.normal(mean, sd, n), lo, hi) * rng.choice([-1.0, 1.0], n)
    arms = rng.choice(np.array(ARM_COUNTS), n, p=ARM_COUNT_PROBS)
    knot_share = np.where(sf, rng.uniform(*KNOT_YOUNG_SHARE_RANGE, n), 0.0)
    n_knots = rng.integers(KNOT_COUNT_RANGE[0], KNOT_COUNT_RANGE[1] + 1, n)
    bar_flux = rng.uniform(*BAR_FLUX_RANGE, n)
    bar_q = rng.uniform(*BAR_AXIS_RATIO_RANGE, n)
    bar_r = rng.uniform(*BAR_RADIUS_RANGE, n)
    bar_angle = rng.uniform(0, np.pi, n)
    arm_flux = rng.uniform(*ARM_FLUX_RANGE, n)
    return {
        "knot_flux_nmgy": young_flux_nmgy * knot_share[:, None],
        "n_knots": np.where(sf, n_knots, 0).astype(np.int16),
        "arm_flux_frac": np.where(spiral, arm_flux, 0.0),
        "n_arms": np.where(spiral, arms, 0).astype(np.int16),
        "arm_pitch_deg": np.where(spiral, pitch, 0.0),
        "bar_flux_frac": np.where(barred, bar_flux, 0.0),
        "bar_r_frac": np.where(barred, bar_r, 0.0),
        "bar_axis_ratio": np.where(barred, bar_q, 0.0),
        "bar_angle_rad": np.where(barred, bar_angle, 0.0),
    }


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
    # Nebular lines, drawn after every other property (samplesky/nebular.py); they add to the
    # continuum photometry, so flux_nmgy is the integral of the same SED the spectra show.
    log_ssfr = np.log10(np.maximum(sfr, 1e-30) / 10**log_mstar)
    neb, line_ew = draw_nebular(rng, z, log_mstar, log_ssfr, is_red, tracer)
    line_flux = line_ew * (coeffs @ halpha_continuum(templates))[:, None]  # (N, n_lines)
    young = np.zeros_like(frac)
    young[:, YOUNG_TEMPLATES] = frac[:, YOUNG_TEMPLATES]
    young_flux = template_photometry(photsys).fluxes(young, z) * formed[:, None] + (
        line_nanomaggies(line_flux, z, photsys)
    )  # (N, 3) nmgy
    return Galaxies(
        tracer=tracer,
        z=z,
        coeffs=coeffs,
        is_red=is_red,
        log_mstar=log_mstar,
        metallicity=metallicity,
        log_ssfr=log_ssfr,
        sigma_kms=np.clip(60 + 35 * (log_mstar - 10.0) + rng.normal(0, 12, n), 30, 250),
        sersic_n=sersic,
        shape_r_arcsec=radius,
        e1=e1,
        e2=e2,
        flux_nmgy=per_formed * formed[:, None] + line_nanomaggies(line_flux, z, photsys),
        bulge_flux_nmgy=template_photometry(photsys).fluxes(bulge_frac, z) * formed[:, None],
        bulge_r_arcsec=bulge_r,
        line_flux=line_flux,
        log_n2_ha=neb.log_n2_ha,
        log_o3_hb=neb.log_o3_hb,
        log_s2_ha=neb.log_s2_ha,
        log_o2_hb=neb.log_o2_hb,
        ebv_gas=neb.ebv_gas,
        ew_halpha_angstrom=neb.ew_halpha_angstrom,
        agn_fraction=neb.agn_fraction,
        # Drawn after every other property, so those keep their values.
        **_structure(rng, is_red, log_mstar, z, young_flux),
    )
