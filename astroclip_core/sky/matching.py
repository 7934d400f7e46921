"""Nearest-neighbour positional cross-match of two sky catalogues.

The contract of :func:`crossmatch` is the one every implementation is held to (see
``tests/test_crossmatch.py``); the spherical helpers here are shared with the per-partition
one-to-one matcher in :mod:`astroclip_core.sky.partition_match`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.spatial import cKDTree

ARCSEC_PER_RAD = 180.0 * 3600.0 / np.pi

# Relative slack on the kd-tree's chord bound so that rounding never drops a pair whose exact
# separation is within the radius; the exact cut is applied to the separation afterwards.
_CHORD_SLACK = 1e-9

# Chord of 60 deg: up to here the haversine form of the separation keeps full precision.
_HAVERSINE_MAX_CHORD = 1.0

# Cell size (deg) of the grid that orders positions before tree building and querying: ~3'
# cells keep consecutive queries in the same tree leaves, which makes the query ~4x faster.
_ORDER_CELL_DEG = 0.05


class CrossMatch(NamedTuple):
    """Result of :func:`crossmatch`; unpacks as ``idx1, idx2, sep_arcsec = crossmatch(...)``."""

    idx1: np.ndarray  # (M,) int64, ascending indices into catalogue 1
    idx2: np.ndarray  # (M,) int64, index of the nearest catalogue-2 position
    sep_arcsec: np.ndarray  # (M,) float64


def crossmatch(
    ra1: np.ndarray,
    dec1: np.ndarray,
    ra2: np.ndarray,
    dec2: np.ndarray,
    radius_arcsec: float,
) -> CrossMatch:
    """Match every catalogue-1 position to its nearest catalogue-2 position within a radius.

    Contract (any replacement implementation must keep it):

    - Inputs: ``ra1, dec1`` (N1,) and ``ra2, dec2`` (N2,) in degrees, any array-like of reals.
      RA may be any finite value (it is periodic); Dec must lie in [-90, 90]. ``radius_arcsec``
      must be finite and > 0. Anything else raises ``ValueError`` naming the bad value.
    - Output: ``CrossMatch(idx1, idx2, sep_arcsec)``, three arrays of equal length M.
      ``idx1`` (int64) lists, in ascending order, every catalogue-1 position whose nearest
      catalogue-2 neighbour lies within the radius; ``idx2`` (int64) is that nearest
      neighbour and ``sep_arcsec`` (float64) the great-circle separation between them.
    - The answer is the one of astropy's ``SkyCoord.match_to_catalog_sky(cat2)`` followed by
      the inclusive cut ``sep <= radius``: "nearest" is nearest in 3-D chord length between
      unit vectors (the same order as great-circle distance), separations agree with
      astropy's Vincenty formula to well under 1e-6 arcsec. The match is many-to-one: two
      catalogue-1 positions may share a catalogue-2 neighbour (the one-to-one resolution
      lives in :mod:`astroclip_core.sky.partition_match`).
    - Exact ties in chord length (e.g. duplicated catalogue-2 positions) resolve to the
      lowest catalogue-2 index; astropy's choice there depends on its kd-tree's layout.
    - Empty catalogues are valid and give empty results.

    This implementation builds a kd-tree of catalogue-2 unit vectors and queries it, in a
    spatially sorted order and on all cores, with an upper bound at the radius's chord, so
    unmatched positions are pruned early. Separations come from the chord by the haversine
    form ``2 asin(c / 2)`` (full precision up to 60 deg) and from ``atan2(|a x b|, a . b)``
    beyond that.
    """
    ra1_a, dec1_a = validate_positions("ra1", "dec1", ra1, dec1)
    ra2_a, dec2_a = validate_positions("ra2", "dec2", ra2, dec2)
    radius = validate_radius(radius_arcsec)
    if ra1_a.size == 0 or ra2_a.size == 0:
        return _empty_match()

    # Work in spatially sorted order: gathering 1-D ra/dec is cheaper than gathering (N, 3).
    order1 = spatial_order(ra1_a, dec1_a)  # sorted slot -> catalogue-1 index
    order2 = spatial_order(ra2_a, dec2_a)  # tree slot -> catalogue-2 index
    xyz1 = unit_vectors(ra1_a[order1], dec1_a[order1])  # (N1, 3), sorted
    xyz2 = unit_vectors(ra2_a[order2], dec2_a[order2])  # (N2, 3), sorted
    tree = cKDTree(xyz2, compact_nodes=False, balanced_tree=False)
    bound = chord_of_arcsec(radius) * (1.0 + _CHORD_SLACK)
    # k=2 only to detect exact ties; columns hold inf / N2 where nothing is within bound.
    chord, slot = tree.query(xyz1, k=2, distance_upper_bound=bound, workers=-1)  # (N1, 2)
    found = np.flatnonzero(np.isfinite(chord[:, 0]))  # sorted slots of catalogue 1
    nearest_chord = chord[found, 0]
    nearest_slot = slot[found, 0]
    tied = np.flatnonzero(nearest_chord == chord[found, 1])
    if tied.size:
        nearest_slot[tied] = _lowest_index_among_ties(
            tree, order2, xyz2, xyz1[found[tied]], nearest_chord[tied]
        )
        diff = xyz2[nearest_slot[tied]] - xyz1[found[tied]]
        nearest_chord[tied] = np.sqrt(np.sum(diff * diff, axis=1))
    sep = separation_from_chord_arcsec(nearest_chord)
    wide = np.flatnonzero(nearest_chord > _HAVERSINE_MAX_CHORD)
    if wide.size:
        sep[wide] = separation_arcsec(xyz1[found[wide]], xyz2[nearest_slot[wide]])
    keep = sep <= radius
    query_idx = order1[found[keep]]
    nearest = order2[nearest_slot[keep]]

    # Scatter into catalogue-1 order so idx1 comes out ascending without a sort.
    best = np.full(ra1_a.size, -1, dtype=np.int64)
    best_sep = np.empty(ra1_a.size, dtype=np.float64)
    best[query_idx] = nearest
    best_sep[query_idx] = sep[keep]
    idx1 = np.flatnonzero(best >= 0).astype(np.int64)
    return CrossMatch(idx1, best[idx1], best_sep[idx1])


def validate_positions(
    ra_name: str, dec_name: str, ra_deg: np.ndarray, dec_deg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``ra_deg, dec_deg`` as 1-D float64 arrays, or raise ``ValueError`` naming the problem."""
    ra = np.asarray(ra_deg, dtype=np.float64)
    dec = np.asarray(dec_deg, dtype=np.float64)
    if ra.ndim != 1 or dec.ndim != 1:
        raise ValueError(f"{ra_name}/{dec_name} must be 1-D, got shapes {ra.shape} and {dec.shape}")
    if ra.shape != dec.shape:
        raise ValueError(f"{ra_name} has {ra.size} values but {dec_name} has {dec.size}")
    for name, values in ((ra_name, ra), (dec_name, dec)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(f"{name}[{bad[0]}] = {values[bad[0]]} is not finite")
    bad = np.flatnonzero(np.abs(dec) > 90.0)
    if bad.size:
        raise ValueError(f"{dec_name}[{bad[0]}] = {dec[bad[0]]} deg is outside [-90, 90]")
    return ra, dec


def validate_radius(radius_arcsec: float) -> float:
    """Return the radius as a float, or raise ``ValueError`` unless it is finite and > 0."""
    radius = float(radius_arcsec)
    if not np.isfinite(radius) or radius <= 0.0:
        raise ValueError(f"radius_arcsec = {radius_arcsec} must be finite and > 0")
    return radius


def unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """(N, 3) float64 Cartesian unit vectors of positions in degrees (astropy's convention)."""
    ra = np.deg2rad(ra_deg)
    dec = np.deg2rad(dec_deg)
    cos_dec = np.cos(dec)
    xyz = np.empty((ra.size, 3), dtype=np.float64)
    np.multiply(cos_dec, np.cos(ra), out=xyz[:, 0])
    np.multiply(cos_dec, np.sin(ra), out=xyz[:, 1])
    np.sin(dec, out=xyz[:, 2])
    return xyz


def chord_of_arcsec(sep_arcsec: float) -> float:
    """Straight-line distance between two unit vectors separated by ``sep_arcsec``."""
    return 2.0 * np.sin(0.5 * sep_arcsec / ARCSEC_PER_RAD)


def separation_arcsec(xyz_a: np.ndarray, xyz_b: np.ndarray) -> np.ndarray:
    """Great-circle separation (arcsec) between matching rows of two (N, 3) unit-vector arrays.

    ``atan2(|a x b|, a . b)`` is accurate at every separation (Vincenty's formula in vector
    form); ``arccos(a . b)`` would lose half the digits below an arcsecond.
    """
    ax, ay, az = xyz_a[:, 0], xyz_a[:, 1], xyz_a[:, 2]
    bx, by, bz = xyz_b[:, 0], xyz_b[:, 1], xyz_b[:, 2]
    sin_sep = np.sqrt(
        (ay * bz - az * by) ** 2 + (az * bx - ax * bz) ** 2 + (ax * by - ay * bx) ** 2
    )
    cos_sep = ax * bx + ay * by + az * bz
    return np.arctan2(sin_sep, cos_sep) * ARCSEC_PER_RAD


def separation_from_chord_arcsec(chord: np.ndarray) -> np.ndarray:
    """Separation (arcsec) from chord lengths between unit vectors: haversine, ``2 asin(c / 2)``.

    As accurate as Vincenty's formula for chords up to ``_HAVERSINE_MAX_CHORD`` (separations
    up to 60 deg); beyond that asin loses digits and :func:`separation_arcsec` should be used.
    """
    return 2.0 * np.arcsin(np.minimum(0.5 * chord, 1.0)) * ARCSEC_PER_RAD


def spatial_order(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """Permutation (int64) that groups positions into ~3' cells, dec strip by dec strip.

    Used only for speed (memory locality of kd-tree builds and queries), never for results.
    Two stable 16-bit radix passes over the 32-bit cell key cost far less than a comparison sort.
    """
    n_ra_cells = int(np.ceil(360.0 / _ORDER_CELL_DEG))
    strip = np.minimum(((dec_deg + 90.0) / _ORDER_CELL_DEG).astype(np.uint32), 180 * 20)
    ra_cell = (np.mod(ra_deg, 360.0) / _ORDER_CELL_DEG).astype(np.uint32)
    key = strip * np.uint32(n_ra_cells) + np.minimum(ra_cell, n_ra_cells - 1)
    order = np.argsort((key & 0xFFFF).astype(np.uint16), kind="stable")
    high = (key[order] >> 16).astype(np.uint16)
    return order[np.argsort(high, kind="stable")].astype(np.int64)


def _lowest_index_among_ties(
    tree: cKDTree,
    order2: np.ndarray,
    xyz2: np.ndarray,
    xyz_query: np.ndarray,
    nearest_chord: np.ndarray,
) -> np.ndarray:
    """Tree slot of the lowest catalogue-2 index at the nearest chord, for tied queries.

    ``xyz2`` is in tree-slot order and ``order2`` maps slots to catalogue-2 indices. Exact
    ties are rare (duplicated positions), so a Python loop over them is fine.
    """
    ball = tree.query_ball_point(xyz_query, nearest_chord * (1.0 + _CHORD_SLACK))
    chosen = np.empty(len(xyz_query), dtype=np.int64)
    for row, candidate_slots in enumerate(ball):
        slots = np.asarray(candidate_slots, dtype=np.int64)
        diff = xyz2[slots] - xyz_query[row]  # (C, 3)
        chord2 = np.sum(diff * diff, axis=1)
        at_min = slots[chord2 == chord2.min()]
        chosen[row] = at_min[np.argmin(order2[at_min])]
    return chosen


def _empty_match() -> CrossMatch:
    return CrossMatch(
        np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    )
