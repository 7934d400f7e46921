"""Per-partition one-to-one matching: border pairs found exactly once, conflicts, margins, IDs."""

from __future__ import annotations

import numpy as np
import pytest
from astropy_healpix import HEALPix
from scipy.spatial import cKDTree

from astroclip_core.sky.healpix import PARTITION_NSIDE, HealpixPixel, pixels_of
from astroclip_core.sky.matching import chord_of_arcsec, unit_vectors
from astroclip_core.sky.partition_match import (
    BorderRivals,
    SourceIds,
    SourcePositions,
    SpectraPositions,
    id_agreement,
    in_pixel_with_margin,
    match_partition,
)

ARCSEC_DEG = 1.0 / 3600.0


def _offset(rng, ra, dec, length_arcsec):
    """Move each position by exactly ``length_arcsec`` in a random direction (poles included)."""
    xyz = unit_vectors(ra, dec)  # (N, 3)
    direction = rng.normal(size=xyz.shape)
    direction -= np.sum(direction * xyz, axis=1, keepdims=True) * xyz
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    angle = np.deg2rad(np.asarray(length_arcsec) * ARCSEC_DEG)[..., None]  # (N, 1) or (1,)
    moved = np.cos(angle) * xyz + np.sin(angle) * direction
    ra_out = np.rad2deg(np.arctan2(moved[:, 1], moved[:, 0])) % 360.0
    return ra_out, np.rad2deg(np.arcsin(np.clip(moved[:, 2], -1.0, 1.0)))


def _boundary_points(pixels, step):
    """(ra, dec) samples along the given nside-16 pixels' boundaries, at least 30" apart."""
    healpix = HEALPix(nside=PARTITION_NSIDE, order="nested")
    lon, lat = healpix.boundaries_lonlat(np.asarray(pixels), step=step)
    ra, dec = lon.deg.ravel() % 360.0, lat.deg.ravel()
    tree = cKDTree(unit_vectors(ra, dec))
    drop = {j for _, j in tree.query_pairs(chord_of_arcsec(30.0))}
    keep = np.array([k for k in range(ra.size) if k not in drop])
    return ra[keep], dec[keep]


def _match_all_partitions(
    ra_spec, dec_spec, ra_src, dec_src, margin_arcsec, radius_arcsec, rivals=True
):
    """Run match_partition over every pixel holding spectra; (spectrum, source) global pairs.

    ``margin_arcsec=None`` gives each partition only the sources inside its own pixel. With
    ``rivals``, each partition sees every other partition's spectra (TARGETID = global index),
    as the ingest gives it its neighbours' from the release catalogue.
    """
    spec_pix = pixels_of(ra_spec, dec_spec)
    src_pix = pixels_of(ra_src, dec_src)
    found = []
    for p in np.unique(spec_pix).tolist():
        pixel = HealpixPixel(PARTITION_NSIDE, p)
        spec_rows = np.flatnonzero(spec_pix == p)
        if margin_arcsec is None:
            src_rows = np.flatnonzero(src_pix == p)
        else:
            src_rows = np.flatnonzero(in_pixel_with_margin(ra_src, dec_src, pixel, margin_arcsec))
        other = np.flatnonzero(spec_pix != p)
        result = match_partition(
            SpectraPositions(ra_spec[spec_rows], dec_spec[spec_rows]),
            SourcePositions(ra_src[src_rows], dec_src[src_rows]),
            pixel,
            radius_arcsec=radius_arcsec,
            rivals=BorderRivals(spec_rows, SpectraPositions(ra_spec[other], dec_spec[other]), other)
            if rivals
            else None,
        )
        found += zip(
            spec_rows[result.spectrum_idx].tolist(),
            src_rows[result.source_idx].tolist(),
            strict=True,
        )
    return found


def test_pairs_straddling_partition_borders_are_found_exactly_once():
    rng = np.random.default_rng(11)
    seeds = pixels_of(
        np.array([45.0, 0.5, 359.5, 200.0, 150.0]), np.array([89.9, 5.0, 5.0, -89.9, 2.0])
    )  # north pole, both sides of RA = 0, south pole, equator
    ra_b, dec_b = _boundary_points(seeds, step=40)
    ra_spec, dec_spec = _offset(rng, ra_b, dec_b, 0.3)  # spectra hug the borders
    ra_src, dec_src = _offset(rng, ra_spec, dec_spec, 0.6)  # planted source k of spectrum k
    # Unrelated sources, kept > 3" from every spectrum so they never outbid a planted one.
    ra_bg, dec_bg = _offset(rng, np.repeat(ra_spec, 3), np.repeat(dec_spec, 3), 8.0)
    n_planted = ra_spec.size

    spec_pix, src_pix = pixels_of(ra_spec, dec_spec), pixels_of(ra_src, dec_src)
    straddle = spec_pix != src_pix
    directions = set(zip(spec_pix[straddle].tolist(), src_pix[straddle].tolist(), strict=True))
    assert straddle.sum() >= 40
    assert any((b, a) in directions for a, b in directions)  # both ways across one border

    found = _match_all_partitions(
        ra_spec,
        dec_spec,
        np.concatenate([ra_src, ra_bg]),
        np.concatenate([dec_src, dec_bg]),
        margin_arcsec=10.0,
        radius_arcsec=1.0,
    )
    assert sorted(found) == [(k, k) for k in range(n_planted)]  # each once, none duplicated


def test_without_margin_border_pairs_are_lost():
    rng = np.random.default_rng(12)
    ra_b, dec_b = _boundary_points(pixels_of(np.array([150.0]), np.array([2.0])), step=40)
    ra_spec, dec_spec = _offset(rng, ra_b, dec_b, 0.3)
    ra_src, dec_src = _offset(rng, ra_spec, dec_spec, 0.6)
    straddle = pixels_of(ra_spec, dec_spec) != pixels_of(ra_src, dec_src)
    found = _match_all_partitions(ra_spec, dec_spec, ra_src, dec_src, None, 1.0)
    assert len(found) == ra_spec.size - straddle.sum()
    assert straddle.sum() > 0


def _conflict_layout(pixel):
    """Source S0 with spectra A (0.4" north) and B (0.6" south); S1 is 0.9" south of B."""
    ra0, dec0 = pixel.center_deg()
    spectra = SpectraPositions(
        np.full(2, ra0), dec0 + np.array([0.4, -0.6]) * ARCSEC_DEG
    )  # A = 0, B = 1
    sources = SourcePositions(np.full(2, ra0), dec0 + np.array([0.0, -1.5]) * ARCSEC_DEG)
    return spectra, sources


def test_conflict_goes_to_closest_pair_and_loser_takes_next_source():
    pixel = HealpixPixel(PARTITION_NSIDE, 1703)
    spectra, sources = _conflict_layout(pixel)
    result = match_partition(spectra, sources, pixel, radius_arcsec=1.0)
    assert result.spectrum_idx.tolist() == [0, 1]
    assert result.source_idx.tolist() == [0, 1]
    np.testing.assert_allclose(result.sep_arcsec, [0.4, 0.9], atol=1e-6)
    assert (result.n_spectra, result.n_matched, result.n_unmatched) == (2, 2, 0)
    assert result.n_conflicts_resolved == 1


def test_radius_is_configurable():
    pixel = HealpixPixel(PARTITION_NSIDE, 1703)
    spectra, sources = _conflict_layout(pixel)
    tight = match_partition(spectra, sources, pixel, radius_arcsec=0.8)
    assert tight.radius_arcsec == 0.8
    assert tight.spectrum_idx.tolist() == [0] and tight.source_idx.tolist() == [0]
    assert (tight.n_matched, tight.n_unmatched, tight.n_conflicts_resolved) == (1, 1, 1)
    loose = match_partition(spectra, sources, pixel, radius_arcsec=0.5)
    assert (loose.n_matched, loose.n_conflicts_resolved) == (1, 0)


def test_many_candidates_per_spectrum_beyond_first_k():
    """Six spectra crowd around six sources; one to one needs more than 4 candidates each."""
    pixel = HealpixPixel(PARTITION_NSIDE, 1703)
    ra0, dec0 = pixel.center_deg()
    offsets = np.arange(6) * 0.1 * ARCSEC_DEG
    spectra = SpectraPositions(np.full(6, ra0), dec0 + offsets)
    sources = SourcePositions(np.full(6, ra0), dec0 + offsets + 0.01 * ARCSEC_DEG)
    result = match_partition(spectra, sources, pixel, radius_arcsec=1.0)
    assert result.n_matched == 6
    assert sorted(result.source_idx.tolist()) == list(range(6))


def test_spectra_outside_the_pixel_are_rejected():
    pixel = HealpixPixel(PARTITION_NSIDE, 1703)
    ra0, dec0 = pixel.center_deg()
    spectra = SpectraPositions(np.array([ra0, ra0 + 20.0]), np.array([dec0, dec0]))
    with pytest.raises(ValueError, match=r"1 of 2 spectra lie outside .*index 1"):
        match_partition(spectra, SourcePositions(np.array([ra0]), np.array([dec0])), pixel)


def test_empty_sources_leave_every_spectrum_unmatched():
    pixel = HealpixPixel(PARTITION_NSIDE, 1703)
    ra0, dec0 = pixel.center_deg()
    result = match_partition(
        SpectraPositions(np.array([ra0]), np.array([dec0])),
        SourcePositions(np.array([]), np.array([])),
        pixel,
    )
    assert (result.n_spectra, result.n_matched, result.n_unmatched) == (1, 0, 1)


@pytest.mark.parametrize("seed_radec", [(150.0, 2.0), (45.0, 89.9), (0.2, -30.0)])
def test_margin_selection_keeps_everything_within_margin(seed_radec):
    rng = np.random.default_rng(5)
    pixel = HealpixPixel(PARTITION_NSIDE, int(pixels_of(*map(np.atleast_1d, seed_radec))[0]))
    healpix = HEALPix(nside=PARTITION_NSIDE, order="nested")
    lon, lat = healpix.boundaries_lonlat(pixel.pixel, step=40_000)  # reference: ~0.1" spacing
    dense = cKDTree(unit_vectors(lon.deg.ravel(), lat.deg.ravel()))
    pick = rng.integers(0, lon.size, 4000)
    ra, dec = _offset(rng, lon.deg.ravel()[pick], lat.deg.ravel()[pick], rng.uniform(0, 30, 4000))
    chord, _ = dense.query(unit_vectors(ra, dec))
    dist_arcsec = 2 * np.rad2deg(np.arcsin(chord / 2)) * 3600
    inside = pixels_of(ra, dec) == pixel.pixel
    margin = 10.0

    keep = in_pixel_with_margin(ra, dec, pixel, margin)
    assert np.all(keep[inside])
    assert np.all(keep[dist_arcsec <= margin - 0.2])
    assert not np.any(keep[~inside & (dist_arcsec > 1.3 * margin)])
    assert 0 < np.sum(keep & ~inside) < np.sum(~inside)


def test_id_agreement_counts_pairs_with_ids_on_both_sides():
    pixel = HealpixPixel(PARTITION_NSIDE, 1703)
    ra0, dec0 = pixel.center_deg()
    offsets = np.arange(4) * 10.0 * ARCSEC_DEG  # four well separated pairs
    spectra = SpectraPositions(
        np.full(4, ra0),
        dec0 + offsets,
        SourceIds(release=[9010, 9010, 9011, 0], brickid=[5, 5, 6, 0], objid=[1, 2, 3, -1]),
    )
    sources = SourcePositions(
        np.full(4, ra0),
        dec0 + offsets + 0.2 * ARCSEC_DEG,
        SourceIds(release=[9010, 9010, 9011, 9010], brickid=[5, 5, 6, 7], objid=[1, 9, 3, 4]),
    )
    result = match_partition(spectra, sources, pixel)
    assert result.n_matched == 4
    agreement = id_agreement(result, spectra, sources)
    assert (agreement.n_both_have_ids, agreement.n_agree) == (3, 2)
    assert agreement.rate == pytest.approx(2 / 3)
    no_ids = SpectraPositions(spectra.ra_deg, spectra.dec_deg)
    assert id_agreement(result, no_ids, sources).rate is None


def test_source_ids_must_match_positions_in_length():
    with pytest.raises(ValueError, match="2 positions but 1 source IDs"):
        SourcePositions(np.zeros(2), np.zeros(2), SourceIds([9010], [1], [1]))


def _toward(xyz, target_xyz, arcsec):
    """(3,) unit vector ``arcsec`` from ``xyz`` along the great circle toward ``target_xyz``."""
    direction = target_xyz - np.dot(target_xyz, xyz) * xyz
    direction /= np.linalg.norm(direction)
    angle = np.deg2rad(arcsec * ARCSEC_DEG)
    return np.cos(angle) * xyz + np.sin(angle) * direction


def _radec(xyz_rows):
    xyz = np.atleast_2d(xyz_rows)
    return np.rad2deg(np.arctan2(xyz[:, 1], xyz[:, 0])) % 360.0, np.rad2deg(np.arcsin(xyz[:, 2]))


def _shared_border(pixel_a, pixel_b):
    """(border point, centre of a, centre of b) as unit vectors, where the line of centres
    crosses from ``pixel_a`` straight into ``pixel_b``."""
    ca = unit_vectors(*map(np.atleast_1d, HealpixPixel(PARTITION_NSIDE, pixel_a).center_deg()))[0]
    cb = unit_vectors(*map(np.atleast_1d, HealpixPixel(PARTITION_NSIDE, pixel_b).center_deg()))[0]
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        point = (1 - mid) * ca + mid * cb
        inside_a = pixels_of(*_radec(point / np.linalg.norm(point)))[0] == pixel_a
        lo, hi = (mid, hi) if inside_a else (lo, mid)
    point = (1 - lo) * ca + lo * cb
    return point / np.linalg.norm(point), ca, cb


def _contested_layout(with_fallback):
    """Source S on the 1703/1702 border: A (in 1703) 0.3" from it, B (in 1702) 0.5"; with
    ``with_fallback``, a second source 0.8" beyond B. Returns spectra and sources (ra, dec)."""
    border, c_a, c_b = _shared_border(1703, 1702)
    spec = np.array([_toward(border, c_a, 0.3), _toward(border, c_b, 0.5)])  # A = 0, B = 1
    src = [border] + ([_toward(spec[1], c_b, 0.8)] if with_fallback else [])
    ra_spec, dec_spec = _radec(spec)
    assert pixels_of(ra_spec, dec_spec).tolist() == [1703, 1702]
    return ra_spec, dec_spec, *_radec(np.array(src))


def test_a_source_claimed_from_both_sides_of_a_border_is_used_once():
    ra_spec, dec_spec, ra_src, dec_src = _contested_layout(with_fallback=True)
    args = (ra_spec, dec_spec, ra_src, dec_src, 10.0, 1.0)

    unresolved = _match_all_partitions(*args, rivals=False)
    assert sorted(unresolved) == [(0, 0), (1, 0)]  # what the rule prevents: S used twice
    found = _match_all_partitions(*args)
    assert sorted(found) == [(0, 0), (1, 1)]  # the nearer A keeps S; B takes its next source


def test_the_losing_side_records_the_contest_and_may_stay_unmatched():
    ra_spec, dec_spec, ra_src, dec_src = _contested_layout(with_fallback=False)
    results = {}
    for own, other in ((0, 1), (1, 0)):
        pixel = HealpixPixel(PARTITION_NSIDE, int(pixels_of(ra_spec[[own]], dec_spec[[own]])[0]))
        rivals = BorderRivals([own], SpectraPositions(ra_spec[[other]], dec_spec[[other]]), [other])
        results[own] = match_partition(
            SpectraPositions(ra_spec[[own]], dec_spec[[own]]),
            SourcePositions(ra_src, dec_src),
            pixel,
            rivals=rivals,
        )
    won, lost = results[0], results[1]
    assert (won.n_matched, won.n_border_contested, won.n_border_ceded) == (1, 1, 0)
    assert (lost.n_matched, lost.n_border_contested, lost.n_border_ceded) == (0, 1, 1)
    assert (won.n_border_losers, lost.n_border_losers) == (0, 1)


def test_equal_claims_across_a_border_go_to_the_lower_targetid():
    """A rival at the very position of the spectrum here claims the source at an equal
    separation, to the last bit: the lower TARGETID wins."""
    pixel = HealpixPixel(PARTITION_NSIDE, 1703)
    ra0, dec0 = pixel.center_deg()
    spectra = SpectraPositions(np.array([ra0]), np.array([dec0]))
    sources = SourcePositions(np.array([ra0]), np.array([dec0 + 0.5 * ARCSEC_DEG]))
    outcome = {}
    for own_tid, rival_tid in ((7, 9), (9, 7)):
        rivals = BorderRivals([own_tid], spectra, [rival_tid])
        result = match_partition(spectra, sources, pixel, rivals=rivals)
        outcome[own_tid] = (result.n_matched, result.n_border_contested, result.n_border_ceded)
    assert outcome == {7: (1, 1, 0), 9: (0, 1, 1)}


def test_crowded_borders_use_each_source_at_most_once_in_the_release():
    rng = np.random.default_rng(21)
    ra_b, dec_b = _boundary_points(pixels_of(np.array([150.0]), np.array([2.0])), step=40)
    # Three spectra and three sources within ~1.5" of each border point: many contests.
    ra_spec, dec_spec = _offset(
        rng, np.repeat(ra_b, 3), np.repeat(dec_b, 3), rng.uniform(0, 0.8, 3 * ra_b.size)
    )
    ra_src, dec_src = _offset(
        rng, np.repeat(ra_b, 3), np.repeat(dec_b, 3), rng.uniform(0, 0.8, 3 * ra_b.size)
    )
    args = (ra_spec, dec_spec, ra_src, dec_src, 10.0, 1.0)

    found = _match_all_partitions(*args)
    sources = [j for _, j in found]
    assert len(sources) == len(set(sources))
    unresolved = [j for _, j in _match_all_partitions(*args, rivals=False)]
    assert len(unresolved) > len(set(unresolved))  # the layout does produce contests
