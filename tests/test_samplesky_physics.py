"""Physics of the sample sky: lines, photometry, colours and morphology are one galaxy."""

from __future__ import annotations

from pathlib import Path

import fitsio
import numpy as np
import pytest

from astroclip_core.formats.desi import arm_wavelength
from astroclip_core.samplesky.assemble import build_pixel_sky
from astroclip_core.samplesky.config import preset
from astroclip_core.samplesky.photometry import filters
from astroclip_core.samplesky.population import draw_galaxies
from astroclip_core.samplesky.render import SourceShapes, render_sources
from astroclip_core.samplesky.sky import PixelSky
from astroclip_core.samplesky.spectra import FLUX_UNIT, model_spectrum, observe

SPEC_MIN_ANGSTROM, SPEC_MAX_ANGSTROM = 3600.0, 9824.0
# Strongest line of each feature (vacuum A); [O II] is a blend peaking between 3727 and 3730.
LINES = {"[O II]": 3728.9, "Hbeta": 4862.68, "[O III]": 5008.24, "Halpha": 6564.61}


@pytest.fixture(scope="module")
def pixel_sky() -> PixelSky:
    """One pixel of the tiny sky (built in memory, no files)."""
    return build_pixel_sky(preset("tiny"), 1703)


def _merged(model: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Noiseless arms joined on 3600-9824 A (each overlap taken from the bluer arm)."""
    wb, wr, wz = (arm_wavelength(a) for a in "BRZ")
    r_sel, z_sel = wr > wb[-1], wz > wr[-1]
    wave = np.r_[wb, wr[r_sel], wz[z_sel]]
    return wave, np.r_[model["B"], model["R"][r_sel], model["Z"][z_sel]]


def test_emission_lines_peak_at_redshifted_wavelengths(pixel_sky: PixelSky) -> None:
    t = pixel_sky.targets
    star_forming = np.flatnonzero((t.kind == "galaxy") & ~t.is_red)[:15]
    checked = 0
    for i in star_forming:
        wave, flux = _merged(model_spectrum(t, int(i)))
        for name, rest in LINES.items():
            obs = rest * (1 + t.z[i])
            if not SPEC_MIN_ANGSTROM + 15 < obs < SPEC_MAX_ANGSTROM - 15:
                continue
            window = np.abs(wave - obs) < 12.0
            peak = wave[window][np.argmax(flux[window])]
            tolerance = 2.0 + (1.5 * (1 + t.z[i]) if name == "[O II]" else 0.0)
            assert abs(peak - obs) < tolerance, (
                f"{name} of target {i} at z={t.z[i]:.3f}: {peak} vs {obs}"
            )
            assert flux[window].max() > np.median(flux[window]), f"{name} is not a peak"
            checked += 1
    assert checked >= 20


def test_rendered_flux_equals_catalogue_flux(pixel_sky: PixelSky) -> None:
    src = pixel_sky.sources
    picked = []
    for mtype in ("PSF", "REX", "EXP", "DEV", "SER"):
        cand = np.flatnonzero((src.morphtype == mtype) & (src.shape_r_arcsec < 2.0))
        assert cand.size, f"no {mtype} source in the tiny sky"
        picked.append(int(cand[0]))
    for i in picked:
        one = SourceShapes(
            src.ra_deg[[i]],
            src.dec_deg[[i]],
            src.morphtype[[i]],
            src.sersic_n[[i]],
            src.shape_r_arcsec[[i]],
            src.e1[[i]],
            src.e2[[i]],
            src.flux_nmgy[[i]],
        )
        # A stamp of 8 half-light radii (the truncation) plus PSF wings on each side.
        size = int(2 * (8 * src.shape_r_arcsec[i] + 12.0) / 0.262) + 1
        image = render_sources(
            one, src.ra_deg[i], src.dec_deg[i], size, 0.262, np.array([1.4, 1.3, 1.2])
        )
        np.testing.assert_allclose(image.sum(axis=(1, 2)), src.flux_nmgy[i], rtol=0.02)


def test_spectrum_colours_match_catalogue_colours(pixel_sky: PixelSky) -> None:
    t = pixel_sky.targets
    bands = filters(t.photsys)
    inside = []
    for flt in bands:
        # "Inside" when < 0.5% of the filter's photon weight falls outside 3600-9824 A.
        w, weight = flt.wavelength, flt.response * flt.wavelength
        outside = (w < SPEC_MIN_ANGSTROM) | (w > SPEC_MAX_ANGSTROM)
        inside.append(np.trapezoid(weight * outside, w) / np.trapezoid(weight, w) < 0.005)
    assert inside[0] and inside[1], "g and r must lie inside the DESI range"
    galaxies = np.flatnonzero(t.kind == "galaxy")[:25]
    checked = 0
    for i in galaxies:
        wave, flux = _merged(model_spectrum(t, int(i)))
        padded, padded_wave = bands.pad_spectrum(flux * FLUX_UNIT, wave, method="zero")
        maggies = bands.get_ab_maggies(padded, padded_wave)
        synth = np.array([float(maggies[name][0]) for name in maggies.colnames])
        for b0, b1 in ((0, 1), (1, 2)):
            if not (inside[b0] and inside[b1]):
                continue
            colour_spec = -2.5 * np.log10(synth[b0] / synth[b1])
            colour_cat = -2.5 * np.log10(t.flux_nmgy[i, b0] / t.flux_nmgy[i, b1])
            assert abs(colour_spec - colour_cat) < 0.05, (
                f"target {i}: {colour_spec} vs {colour_cat}"
            )
            checked += 1
    assert checked >= 25


def test_passive_galaxies_are_redder_at_fixed_redshift() -> None:
    gal = draw_galaxies(np.random.default_rng(3), 3000)
    g_r = -2.5 * np.log10(gal.flux_nmgy[:, 0] / gal.flux_nmgy[:, 1])
    compared = 0
    for lo in np.arange(0.05, 0.45, 0.05):
        sel = (gal.z >= lo) & (gal.z < lo + 0.05)
        red, blue = g_r[sel & gal.is_red], g_r[sel & ~gal.is_red]
        if red.size < 20 or blue.size < 20:
            continue
        assert np.median(red) > np.median(blue) + 0.2, (
            f"z {lo:.2f}: red {np.median(red)} blue {np.median(blue)}"
        )
        compared += 1
    assert compared >= 4


def test_properties_follow_populations() -> None:
    gal = draw_galaxies(np.random.default_rng(4), 2000)
    assert np.median(gal.log_ssfr[gal.is_red]) < -11.0 < np.median(gal.log_ssfr[~gal.is_red])
    # ELGs reach z 1.6 (DESI's ELG n(z)); most targets (BGS, LRG) lie below 0.6.
    assert np.mean(gal.z < 0.6) > 0.5 and gal.z.min() >= 0.01 and gal.z.max() <= 1.6
    # Flux-limited selection: the distant half is more massive.
    near, far = gal.z < np.median(gal.z), gal.z >= np.median(gal.z)
    assert np.median(gal.log_mstar[far]) > np.median(gal.log_mstar[near])
    # Spheroids (red) are de Vaucouleurs, discs exponential.
    assert set(gal.sersic_n[gal.is_red]) == {4.0} and set(gal.sersic_n[~gal.is_red]) == {1.0}


REAL_COADD = Path(__file__).parent / "data" / "desi" / "coadd-sv3-dark-26065.fits"


def test_dark_spectrum_noise_matches_real_edr_coadd() -> None:
    """A dark 1000 s sample-sky spectrum has the real EDR coadd's per-arm median sigma."""
    fibermap = fitsio.read(str(REAL_COADD), "FIBERMAP")
    rows = np.flatnonzero(fibermap["OBJTYPE"] == "TGT")
    rows = rows[fibermap["TARGETID"][rows] > 0]  # the two real targets, 1009 s and 1443 s
    assert rows.size == 2 and np.all(fibermap["COADD_EXPTIME"][rows] > 900)
    n = 40
    models = [{a: np.zeros(arm_wavelength(a).size) for a in "BRZ"}] * n
    rng = np.random.default_rng(5)
    dark = observe(models, rng, np.full(n, 1000.0), bright=False)
    bright = observe(models, rng, np.full(n, 1000.0), bright=True)
    for arm in "BRZ":
        real_ivar = fitsio.read(str(REAL_COADD), f"{arm}_IVAR")[rows]
        real = np.median(1 / np.sqrt(real_ivar[real_ivar > 0]))
        ours = np.median(1 / np.sqrt(dark.ivar[arm][dark.ivar[arm] > 0]))
        assert ours == pytest.approx(real, rel=0.15), arm
        # The flux scatter of a zero source follows its ivar (sky residuals are small).
        good = dark.ivar[arm] > 0
        pull = dark.flux[arm][good] * np.sqrt(dark.ivar[arm][good])
        assert 0.9 < np.std(pull) < 1.3, arm
        assert np.median(1 / np.sqrt(bright.ivar[arm][bright.ivar[arm] > 0])) > 1.4 * ours
