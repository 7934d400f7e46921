"""The cross-match contract: astropy's match_to_catalog_sky plus an inclusive radius cut."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from astroclip_core.sky import crossmatch
from astroclip_core.sky.matching import separation_arcsec, unit_vectors

ARCSEC_DEG = 1.0 / 3600.0


def _astropy_reference(ra1, dec1, ra2, dec2, radius_arcsec):
    """match_to_catalog_sky followed by ``sep <= radius``, as (idx1, idx2, sep_arcsec)."""
    c1 = SkyCoord(ra1 * u.deg, dec1 * u.deg)
    c2 = SkyCoord(ra2 * u.deg, dec2 * u.deg)
    idx, sep, _ = c1.match_to_catalog_sky(c2)
    sep_arcsec = sep.to_value(u.arcsec)
    ok = sep_arcsec <= radius_arcsec
    return np.flatnonzero(ok), idx[ok], sep_arcsec[ok]


def _jitter(rng, ra, dec, sigma_arcsec):
    """Offset positions by Gaussian steps in the tangent plane (valid at the poles too)."""
    xyz = unit_vectors(ra, dec)  # (N, 3)
    step = rng.normal(0.0, np.deg2rad(sigma_arcsec * ARCSEC_DEG), size=xyz.shape)
    step -= np.sum(step * xyz, axis=1, keepdims=True) * xyz  # keep it tangent
    moved = xyz + step
    moved /= np.linalg.norm(moved, axis=1, keepdims=True)
    return np.rad2deg(np.arctan2(moved[:, 1], moved[:, 0])) % 360.0, np.rad2deg(
        np.arcsin(np.clip(moved[:, 2], -1.0, 1.0))
    )


def _hard_sky(rng, n_per_region):
    """Positions in three awkward regions: both polar caps (|dec| > 89) and across RA = 0."""
    north_dec = np.rad2deg(np.arcsin(rng.uniform(np.sin(np.deg2rad(89.0)), 1.0, n_per_region)))
    south_dec = -np.rad2deg(np.arcsin(rng.uniform(np.sin(np.deg2rad(89.0)), 1.0, n_per_region)))
    wrap_ra = rng.uniform(-0.5, 0.5, n_per_region) % 360.0
    wrap_dec = rng.uniform(-1.0, 1.0, n_per_region)
    ra = np.concatenate([rng.uniform(0, 360, 2 * n_per_region), wrap_ra])
    dec = np.concatenate([north_dec, south_dec, wrap_dec])
    return ra, dec


def test_matches_astropy_near_poles_and_across_ra_zero():
    rng = np.random.default_rng(20240611)
    ra1, dec1 = _hard_sky(rng, 33_000)  # ~10k/deg^2 in each region
    n1 = ra1.size
    # Catalogue 2: 70% of catalogue 1 jittered by 0.8" (shuffled), plus unrelated sources.
    counterpart = rng.choice(n1, size=int(0.7 * n1), replace=False)
    ra_j, dec_j = _jitter(rng, ra1[counterpart], dec1[counterpart], 0.8)
    ra_u, dec_u = _hard_sky(rng, 10_000)
    perm = rng.permutation(counterpart.size + ra_u.size)
    ra2 = np.concatenate([ra_j, ra_u])[perm]
    dec2 = np.concatenate([dec_j, dec_u])[perm]
    radius = 2.0

    idx1, idx2, sep = crossmatch(ra1, dec1, ra2, dec2, radius)
    ref1, ref2, ref_sep = _astropy_reference(ra1, dec1, ra2, dec2, radius)

    assert 0.5 * n1 < idx1.size < n1  # many match, some do not
    assert idx1.dtype == np.int64 and idx2.dtype == np.int64 and sep.dtype == np.float64
    np.testing.assert_array_equal(idx1, ref1)
    np.testing.assert_array_equal(idx2, ref2)
    np.testing.assert_allclose(sep, ref_sep, rtol=0, atol=1e-6)
    assert np.all(np.diff(idx1) > 0)


def test_matches_astropy_at_large_radius_where_haversine_is_not_used():
    rng = np.random.default_rng(7)
    ra1, dec1 = rng.uniform(0, 360, 300), rng.uniform(-90, 90, 300)
    ra2, dec2 = rng.uniform(0, 360, 5), rng.uniform(-90, 90, 5)
    radius = 100.0 * 3600.0  # 100 deg: chords above 1 take the vector formula
    got = crossmatch(ra1, dec1, ra2, dec2, radius)
    ref = _astropy_reference(ra1, dec1, ra2, dec2, radius)
    assert got.sep_arcsec.max() > 60.0 * 3600.0
    np.testing.assert_array_equal(got.idx1, ref[0])
    np.testing.assert_array_equal(got.idx2, ref[1])
    np.testing.assert_allclose(got.sep_arcsec, ref[2], rtol=0, atol=1e-6)


def test_radius_cut_is_inclusive_and_unmatched_are_left_out():
    dec2 = np.array([0.5 * ARCSEC_DEG, 3.0 * ARCSEC_DEG])
    ra2 = np.zeros(2)
    ra1 = np.array([0.0, 10.0])
    dec1 = np.zeros(2)
    exact = float(
        separation_arcsec(unit_vectors(ra1[:1], dec1[:1]), unit_vectors(ra2[:1], dec2[:1]))[0]
    )
    idx1, idx2, sep = crossmatch(ra1, dec1, ra2, dec2, exact)
    assert idx1.tolist() == [0] and idx2.tolist() == [0]
    assert sep[0] == pytest.approx(0.5, abs=1e-9)
    assert crossmatch(ra1, dec1, ra2, dec2, exact * (1 - 1e-6)).idx1.size == 0


def test_empty_catalogues_give_empty_typed_results():
    some = np.array([10.0, 20.0])
    for ra1, dec1, ra2, dec2 in [
        (some, some, np.array([]), np.array([])),
        (np.array([]), np.array([]), some, some),
    ]:
        idx1, idx2, sep = crossmatch(ra1, dec1, ra2, dec2, 1.0)
        assert idx1.size == idx2.size == sep.size == 0
        assert idx1.dtype == np.int64 and idx2.dtype == np.int64 and sep.dtype == np.float64


def test_duplicated_catalogue2_positions_resolve_to_lowest_index():
    rng = np.random.default_rng(3)
    ra2 = rng.uniform(150.0, 150.1, 200)
    dec2 = rng.uniform(2.0, 2.1, 200)
    # Positions 17 and 150 are copied to indices 180..183; queries sit near the copies.
    ra2[[180, 181]], dec2[[180, 181]] = ra2[17], dec2[17]
    ra2[[182, 183]], dec2[[182, 183]] = ra2[150], dec2[150]
    ra1 = np.array([ra2[17], ra2[150] + 0.2 * ARCSEC_DEG, ra2[5]])
    dec1 = np.array([dec2[17], dec2[150], dec2[5] + 0.3 * ARCSEC_DEG])
    idx1, idx2, sep = crossmatch(ra1, dec1, ra2, dec2, 1.0)
    assert idx1.tolist() == [0, 1, 2]
    assert idx2.tolist() == [17, 150, 5]
    ref = _astropy_reference(ra1, dec1, ra2, dec2, 1.0)
    np.testing.assert_allclose(sep, ref[2], rtol=0, atol=1e-6)


def test_duplicated_catalogue1_positions_share_a_neighbour():
    ra1 = np.array([30.0, 30.0, 31.0])
    dec1 = np.array([-5.0, -5.0, -5.0])
    idx1, idx2, _ = crossmatch(ra1, dec1, np.array([30.0 + 1e-4]), np.array([-5.0]), 1.0)
    assert idx1.tolist() == [0, 1] and idx2.tolist() == [0, 0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ra1": [1.0, 2.0]}, "ra1 has 2 values but dec1 has 1"),
        ({"dec2": [np.nan]}, r"dec2\[0\] = nan is not finite"),
        ({"ra1": [np.inf]}, r"ra1\[0\] = inf is not finite"),
        ({"dec1": [90.5]}, r"dec1\[0\] = 90.5 deg is outside \[-90, 90\]"),
        ({"radius_arcsec": 0.0}, "radius_arcsec = 0.0 must be finite and > 0"),
        ({"radius_arcsec": float("nan")}, "radius_arcsec = nan"),
        ({"ra2": [[1.0]], "dec2": [[1.0]]}, "must be 1-D"),
    ],
)
def test_bad_inputs_raise_naming_the_value(kwargs, message):
    args = {"ra1": [1.0], "dec1": [1.0], "ra2": [1.0], "dec2": [1.0], "radius_arcsec": 1.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        crossmatch(**args)
