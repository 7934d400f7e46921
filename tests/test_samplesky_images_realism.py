"""The sample sky's images carry what real DR9 images carry (issue 16, section 3).

Sizes against published size-mass relations, pixel noise against the real DR9 cutout in
tests/data, field densities against star and galaxy counts, the disc structure's frequencies,
the Tractor shape convention, and determinism. Every bound below is stated with its source; the
README's "Images" section gives the figures these tests were last seen to produce.
"""

from __future__ import annotations

from pathlib import Path

import fitsio
import galsim
import numpy as np
import pytest
from astropy.cosmology import Planck18

from astroclip_core.samplesky import field
from astroclip_core.samplesky.cutouts import CutoutRenderer, CutoutRequest
from astroclip_core.samplesky.ids import PSF_DEPTH_MAG, brick_conditions
from astroclip_core.samplesky.population import (
    BAR_FRACTION_LOW_Z,
    FEATURE_MIN_LOG_MASS,
    SIZE_MASS_VDW14,
    SPIRAL_FRACTION_MASSIVE,
    _shapes,
    draw_galaxies,
)
from astroclip_core.samplesky.render import (
    DiscStructure,
    galaxy_profile,
    psf_noise_area_pix,
    psf_profile,
    structured_disc,
)
from tests.pipeline_support import make_tiny_sky

REAL_CUTOUT = Path(__file__).parent / "data/legacysurvey/dr9-cutout-357.9087-54.8817.fits"
PIXSCALE = 0.262


@pytest.fixture(scope="module")
def galaxies():
    """4,000 spectroscopic-target galaxies of the south (fixed seed)."""
    return draw_galaxies(np.random.default_rng(11), 4000, photsys="S")


@pytest.fixture(scope="module")
def sky(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny sample sky of this module's own."""
    return make_tiny_sky(tmp_path_factory.mktemp("realism") / "sky", ["edr"])


def _clipped_sigma(image: np.ndarray) -> float:
    """1.4826 MAD of the pixels after 3-sigma clipping (sources drop out), nanomaggies."""
    x = image.ravel().astype(np.float64)
    keep = np.ones(x.size, dtype=bool)
    for _ in range(5):
        med = np.median(x[keep])
        sigma = 1.4826 * np.median(np.abs(x[keep] - med))
        keep = np.abs(x - med) < 3 * sigma
    return float(sigma)


def test_low_redshift_galaxies_are_as_large_as_sdss_galaxies(galaxies) -> None:
    # Shen et al. 2003 (SDSS, z ~ 0.1): circularised Petrosian r50 in z band, R/kpc =
    # 2.88e-6 M^0.56 (early types) and 0.1 M^0.14 (1 + M/3.98e10)^0.25 (late types). Petrosian
    # r50 misses part of a Sersic profile's light and red light is more concentrated, so these
    # are lower bounds of rest-frame 5000 A Sersic radii; a factor 2 above them is too large.
    g = galaxies
    low = g.z < 0.1
    e = np.hypot(g.e1, g.e2)
    q = (1 - e) / (1 + e)
    kpc_per_arcsec = Planck18.kpc_proper_per_arcmin(g.z).value / 60.0
    circ_kpc = g.shape_r_arcsec * np.sqrt(q) * kpc_per_arcsec
    m = 10**g.log_mstar
    shen_kpc = np.where(g.is_red, 2.88e-6 * m**0.56, 0.1 * m**0.14 * (1 + m / 3.98e10) ** 0.25)
    for red in (True, False):
        sel = low & (g.is_red == red)
        assert sel.sum() >= 30
        ratio = float(np.median(circ_kpc[sel] / shen_kpc[sel]))
        assert 1.0 <= ratio <= 2.0, f"{'early' if red else 'late'} types: {ratio:.2f} x Shen"
    # In pixels: the median semi-major radius of z < 0.1 galaxies is at least what Shen's
    # relation gives them (about 8 px at 0.262"/px for this sample).
    shen_px = shen_kpc / np.sqrt(q) / kpc_per_arcsec / PIXSCALE
    assert np.median(g.shape_r_arcsec[low] / PIXSCALE) >= np.median(shen_px[low])


def test_sizes_shrink_with_redshift_as_van_der_wel_2014() -> None:
    rng = np.random.default_rng(5)
    n = 20000
    z = rng.uniform(0.05, 1.5, n)
    log_m = rng.uniform(10.3, 11.5, n)  # massive enough that no radius hits the 0.05" floor
    for red in (True, False):
        _, radius, _, _ = _shapes(rng, z, log_m, np.full(n, red))
        log_kpc = np.log10(radius * Planck18.kpc_proper_per_arcmin(z).value / 60.0)
        design = np.column_stack([np.ones(n), log_m - 10.7, np.log10(1 + z)])
        _, alpha, beta = np.linalg.lstsq(design, log_kpc, rcond=None)[0]
        _, alpha_ref, beta_ref, _ = SIZE_MASS_VDW14[red]
        assert abs(alpha - alpha_ref) < 0.05 and abs(beta - beta_ref) < 0.1, (red, alpha, beta)


def test_pixel_noise_matches_dr9_depth_and_the_real_cutout(sky: Path) -> None:
    renderer = CutoutRenderer(sky)
    cat, bricks = renderer.catalog(), renderer.bricks
    rng = np.random.default_rng(0)
    sigmas, offsets = [], []
    for i in rng.choice(cat["ra"].size, 8, replace=False):
        ra, dec = float(cat["ra"][i]) + 0.01, float(cat["dec"][i])
        img = renderer.render(CutoutRequest(ra, dec))
        sigma = np.array([_clipped_sigma(img[b]) for b in range(3)])
        row = int(bricks.index.owners(np.array([ra]), np.array([dec]))[0])
        fwhm, _ = bricks._conditions(row)
        depth = brick_conditions(renderer.seed, bricks.columns["BRICKID"][[row]], np.array([b"S"]))
        # The PSF depth the pixel noise implies: 5 sigma of a PSF flux = 5 sigma_pix sqrt(area).
        implied = 22.5 - 2.5 * np.log10(5 * sigma * np.sqrt(psf_noise_area_pix(fwhm, PIXSCALE)))
        offsets.append(implied - depth.psfdepth_mag[0])
        sigmas.append(sigma)
    # Image noise and catalogue PSFDEPTH agree; the Lanczos-3 resampling of a cutout lowers
    # its pixel noise by ~10-15% (0.1-0.15 mag), hence the one-sided allowance.
    offset = np.median(offsets, axis=0)
    assert np.all((offset > -0.05) & (offset < 0.25)), offset
    # Real DR9 cutout (dec -55: the DES area, 0.3-1 mag deeper than DECaLS in g, r, z): the
    # sample sky, at DECaLS depth, is noisier, but by less than a factor 2.5 (1 mag).
    real = fitsio.read(str(REAL_CUTOUT))
    ratio = np.median(sigmas, axis=0) / np.array([_clipped_sigma(real[b]) for b in range(3)])
    assert np.all((ratio > 1.0) & (ratio < 2.5)), ratio
    # And the noise grows from g to z as in the real cutout (DECam's z sky is brightest).
    s = np.median(sigmas, axis=0)
    assert s[0] < s[1] < s[2]
    assert PSF_DEPTH_MAG["S"] == (24.7, 23.9, 23.0)


def test_field_densities_follow_star_and_galaxy_counts() -> None:
    # One whole brick (0.0625 deg^2) of the field: 100 cells.
    ra1, ra2, dec1, dec2 = 150.0, 150.25, 2.0, 2.25
    cells = [
        field.field_cell(20240611, "S", 999, (ra1, ra2, dec1, dec2), i, j)
        for i in range(field.CELLS_PER_SIDE)
        for j in range(field.CELLS_PER_SIDE)
    ]
    area = np.radians(ra2 - ra1) * (np.sin(np.radians(dec2)) - np.sin(np.radians(dec1)))
    area_deg2 = area * (180 / np.pi) ** 2
    star = np.concatenate([c.shape_r_arcsec == 0 for c in cells])
    r_mag = 22.5 - 2.5 * np.log10(np.concatenate([c.flux_nmgy[:, 1] for c in cells]))
    # Stars at b ~ 40 deg, 16 < r < 23.5: 1,000-5,000 deg^-2 (Bahcall-Soneira-like counts,
    # uncertain by a factor ~2); galaxies with r < 23.5: 15,000-50,000 deg^-2 (SDSS counts of
    # Yasuda et al. 2001 to r = 21, extended with Metcalfe et al. 2001's faint slope).
    assert 1000 < star.sum() / area_deg2 < 5000
    n_gal = ((~star) & (r_mag < 23.5)).sum() / area_deg2
    assert 15000 < n_gal < 50000
    # Faint galaxy counts rise by d log N / dm ~ 0.33 (Metcalfe et al. 2001): 0.25-0.45.
    n21 = ((~star) & (r_mag < 21.0)).sum()
    n23 = ((~star) & (r_mag < 23.0)).sum()
    assert 0.25 < np.log10(n23 / n21) / 2.0 < 0.45
    # Neighbours: a 152-pixel (40") stamp holds ~3 field sources on average (real DR9
    # stamps of that size show a few neighbours), not the ~0.05 of the sweep alone.
    stamp_deg2 = (152 * PIXSCALE / 3600) ** 2
    assert 2 < star.size / area_deg2 * stamp_deg2 < 10


def test_star_forming_discs_have_bars_arms_and_clumps(galaxies) -> None:
    g = galaxies
    sf = ~g.is_red
    disc = sf & (g.log_mstar >= FEATURE_MIN_LOG_MASS) & (g.z < 0.2)
    assert disc.sum() >= 200
    # Bars in ~30% of low-z discs (Masters et al. 2011); spirals in ~2/3 (Willett et al. 2013).
    se = lambda p: 3 * np.sqrt(p * (1 - p) / disc.sum())  # noqa: E731 (3 sigma, binomial)
    bar = (g.bar_flux_frac[disc] > 0).mean()
    spiral = (g.n_arms[disc] > 0).mean()
    assert abs(bar - BAR_FRACTION_LOW_Z) < se(BAR_FRACTION_LOW_Z)
    assert abs(spiral - SPIRAL_FRACTION_MASSIVE) < se(SPIRAL_FRACTION_MASSIVE)
    # Bars fade with redshift (Sheth et al. 2008).
    high = sf & (g.log_mstar >= FEATURE_MIN_LOG_MASS) & (g.z > 0.7)
    assert (g.bar_flux_frac[high] > 0).mean() < bar
    # Every star-forming galaxy has clumps, bluer than the galaxy; passive ones have none.
    assert np.all(g.n_knots[sf] > 0) and np.all(g.n_knots[~sf] == 0)
    assert np.all(g.knot_flux_nmgy[~sf] == 0) and np.all(g.bar_flux_frac[~sf] == 0)
    knot_colour = g.knot_flux_nmgy[sf, 0] / g.knot_flux_nmgy[sf, 2]
    total_colour = g.flux_nmgy[sf, 0] / g.flux_nmgy[sf, 2]
    assert np.median(knot_colour / total_colour) > 1.5
    # The structure is part of the catalogue flux: bulge + clumps never exceed the total.
    assert np.all(g.bulge_flux_nmgy + g.knot_flux_nmgy <= g.flux_nmgy * (1 + 1e-9))


def test_structured_disc_keeps_its_flux_and_is_not_smooth() -> None:
    s = DiscStructure(
        n_knots=20, arm_flux_frac=0.2, n_arms=2, arm_pitch_deg=20.0, bar_flux_frac=0.1,
        bar_r_frac=0.5, bar_axis_ratio=0.3, bar_angle_rad=0.4, seed=7,
    )  # fmt: skip
    from astroclip_core.samplesky.bricks import _add_stamp
    from astroclip_core.sky.bricks import BrickWindow

    psfs = [psf_profile(1.3)]
    win = BrickWindow(0, 301, 0, 301)
    structured = np.zeros((1, 301, 301), dtype=np.float32)
    profiles, blobs = structured_disc(1.0, 4.0, 0.1, 0.05, np.array([50.0]), np.array([5.0]), s)
    _add_stamp(structured, win, 150.2, 149.7, profiles, 4.0, psfs, blobs)
    smooth = np.zeros_like(structured)
    prof = galaxy_profile("EXP", 1.0, 4.0, 0.1, 0.05).withFlux(55.0)
    _add_stamp(smooth, win, 150.2, 149.7, [prof], 4.0, psfs)
    # Same total flux (the PSF image of the blobs is cut at 6", as every stamp is).
    assert structured.sum() == pytest.approx(smooth.sum(), rel=0.01)
    # ...but not the same light: clumps, arms and bar move >5% of it (a noise-free check).
    assert np.abs(structured - smooth).sum() / smooth.sum() > 0.05
    # Another seed puts the clumps elsewhere.
    other = np.zeros_like(structured)
    p2, b2 = structured_disc(1.0, 4.0, 0.1, 0.05, np.array([50.0]), np.array([5.0]),
                             DiscStructure(**{**s.__dict__, "seed": 8}))  # fmt: skip
    _add_stamp(other, win, 150.2, 149.7, p2, 4.0, psfs, b2)
    assert not np.array_equal(other, structured)


def test_shape_r_is_the_major_axis_half_light_radius() -> None:
    # Tractor's EllipseE: SHAPE_R along the major axis, the minor axis q times it.
    r, e1 = 2.0, 0.4
    q = (1 - e1) / (1 + e1)
    scale = 0.05
    img = galaxy_profile("EXP", 1.0, r, e1, 0.0).drawImage(nx=401, ny=401, scale=scale).array
    y, x = (np.mgrid[0:401, 0:401] - 200) * scale
    inside = (x / r) ** 2 + (y / (q * r)) ** 2 < 1  # e1 > 0: major axis along x
    assert img[inside].sum() / img.sum() == pytest.approx(0.5, abs=0.02)


def test_images_are_deterministic(sky: Path) -> None:
    cat = CutoutRenderer(sky).catalog()
    i = int(np.argmax(cat["n_arms"] > 0))
    req = CutoutRequest(float(cat["ra"][i]), float(cat["dec"][i]), size_pix=64)
    first = CutoutRenderer(sky).render(req)
    field.field_cell.cache_clear()
    second = CutoutRenderer(sky).render(req)
    assert np.array_equal(first, second)
    a = field.field_cell(1, "S", 5, (10.0, 10.25, 0.0, 0.25), 3, 4)
    b = field.field_cell(2, "S", 5, (10.0, 10.25, 0.0, 0.25), 3, 4)
    assert not np.array_equal(a.ra_deg[: min(len(a), len(b))], b.ra_deg[: min(len(a), len(b))])
    assert isinstance(psf_profile(1.0), galsim.Moffat)
