"""One-to-one spectrum-to-imaging-source matching inside one HEALPix partition, with a margin.

Why pairs on partition borders are kept exactly once: a spectrum belongs to the one
partition that contains its own position, and that partition's imaging sources include a
margin (:func:`in_pixel_with_margin`) at least as wide as the match radius, so a spectrum
near the edge still sees a source that lies in the neighbouring pixel. Each spectrum is
matched in exactly one partition, hence each pair is found exactly once overall. The margin
is recorded with the sources, and :func:`require_margin_covers_radius` refuses a radius wider
than it (as lsdb's crossmatch refuses a radius wider than its catalogue's margin).

One-to-one holds across partitions too, given the spectra of the neighbouring pixels
(:class:`BorderRivals`, read from the release catalogue, which every partition can read). A
margin source within the radius of spectra on both sides of a border is *contested*; it goes to
the side of its nearest spectrum (exact ties to the lower TARGETID), and the other side drops it
from its candidates, so its spectrum takes its next-nearest free source or stays unmatched.
Both sides evaluate the same rule on the same positions and separations, so they agree without
talking, and a source that only one side can reach is never dropped. What this rule can waste:
when the winning side's nearest spectrum takes another source (its own closer one), the
contested source goes unused although the other side could have used it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy_healpix import HEALPix
from scipy.spatial import cKDTree

from astroclip_core.sky.healpix import HealpixPixel, pixels_of
from astroclip_core.sky.matching import (
    chord_of_arcsec,
    separation_arcsec,
    unit_vectors,
    validate_positions,
    validate_radius,
)

DEFAULT_RADIUS_ARCSEC = 1.0
# Margin of imaging sources loaded around a partition; must be >= the match radius.
DEFAULT_MARGIN_ARCSEC = 10.0

# Candidates per spectrum asked of the kd-tree at first; doubled for spectra that fill them all.
_FIRST_K = 4
# Boundary samples are spaced at most margin / 4, capped in number per pixel edge.
_SAMPLES_PER_MARGIN = 4
_MAX_SAMPLES_PER_EDGE = 100_000


@dataclass(frozen=True)
class SourceIds:
    """Legacy Surveys source key (RELEASE, BRICKID, OBJID), one row per position.

    On the DESI side these are the target's RELEASE, BRICKID and BRICK_OBJID. A row carries
    an ID when ``release > 0``, ``brickid > 0`` and ``objid >= 0``; targets that were not
    selected from Legacy Surveys imaging have zeros or -1 there.
    """

    release: np.ndarray  # (N,) int
    brickid: np.ndarray  # (N,) int
    objid: np.ndarray  # (N,) int

    def __post_init__(self) -> None:
        for name in ("release", "brickid", "objid"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        sizes = {self.release.shape, self.brickid.shape, self.objid.shape}
        if len(sizes) != 1 or self.release.ndim != 1:
            raise ValueError(
                f"SourceIds columns must be 1-D of one length, got release {self.release.shape},"
                f" brickid {self.brickid.shape}, objid {self.objid.shape}"
            )

    def present(self) -> np.ndarray:
        """(N,) bool: rows that carry a Legacy Surveys source ID."""
        return (self.release > 0) & (self.brickid > 0) & (self.objid >= 0)


@dataclass(frozen=True)
class _Positions:
    ra_deg: np.ndarray  # (N,) float64
    dec_deg: np.ndarray  # (N,) float64
    source_ids: SourceIds | None = None

    def __post_init__(self) -> None:
        label = type(self).__name__
        ra, dec = validate_positions(
            f"{label}.ra_deg", f"{label}.dec_deg", self.ra_deg, self.dec_deg
        )
        object.__setattr__(self, "ra_deg", ra)
        object.__setattr__(self, "dec_deg", dec)
        if self.source_ids is not None and self.source_ids.release.size != ra.size:
            raise ValueError(
                f"{label} has {ra.size} positions but {self.source_ids.release.size} source IDs"
            )

    def __len__(self) -> int:
        return int(self.ra_deg.size)


@dataclass(frozen=True)
class SpectraPositions(_Positions):
    """Positions (deg) of the selected DESI targets of one partition, with their optional
    imaging-source link (RELEASE, BRICKID, BRICK_OBJID)."""


@dataclass(frozen=True)
class SourcePositions(_Positions):
    """Positions (deg) of the imaging sources of one partition plus its margin, with their
    optional (RELEASE, BRICKID, OBJID)."""


@dataclass(frozen=True)
class PartitionMatch:
    """One-to-one matches of one partition: row k pairs ``spectrum_idx[k]`` with ``source_idx[k]``.

    ``n_conflicts_resolved`` counts spectra whose nearest source was taken by a closer
    spectrum; each of them then took its next-nearest free source within the radius, or
    stayed unmatched.

    With :class:`BorderRivals`: ``n_border_contested`` counts sources within the radius of
    spectra of this partition and of another; ``n_border_ceded`` those of them whose nearest
    spectrum lies in the other partition (dropped here); ``n_border_losers`` the spectra here
    whose nearest source was ceded (they took their next one, or stayed unmatched).
    """

    pixel: HealpixPixel
    radius_arcsec: float
    spectrum_idx: np.ndarray  # (M,) int64, ascending, into the SpectraPositions
    source_idx: np.ndarray  # (M,) int64, unique, into the SourcePositions
    sep_arcsec: np.ndarray  # (M,) float64
    n_spectra: int
    n_matched: int
    n_unmatched: int
    n_conflicts_resolved: int
    n_border_contested: int = 0
    n_border_ceded: int = 0
    n_border_losers: int = 0


@dataclass(frozen=True)
class BorderRivals:
    """The release's spectra outside a partition that can claim its margin sources.

    ``targetid`` (S,) is the TARGETID of each of the partition's own spectra, in the order of its
    :class:`SpectraPositions`; ``rivals`` are the positions of spectra of other partitions (those
    of the neighbouring pixels are enough: only spectra within two radii of the pixel matter),
    ``rival_targetid`` (R,) theirs. TARGETIDs break exact distance ties between the two sides.
    """

    targetid: np.ndarray  # (S,) int64
    rivals: SpectraPositions
    rival_targetid: np.ndarray  # (R,) int64

    def __post_init__(self) -> None:
        object.__setattr__(self, "targetid", np.asarray(self.targetid, dtype=np.int64))
        object.__setattr__(self, "rival_targetid", np.asarray(self.rival_targetid, dtype=np.int64))
        if self.rival_targetid.shape != (len(self.rivals),):
            raise ValueError(
                f"BorderRivals has {len(self.rivals)} rival positions but "
                f"{self.rival_targetid.size} rival TARGETIDs"
            )


@dataclass(frozen=True)
class IdAgreement:
    """How often position and source ID agree among matched pairs where both sides have IDs.

    ``rate`` is ``n_agree / n_both_have_ids``, or None when no pair has IDs on both sides.
    """

    n_both_have_ids: int
    n_agree: int
    rate: float | None


def match_partition(
    spectra: SpectraPositions,
    sources: SourcePositions,
    pixel: HealpixPixel,
    radius_arcsec: float = DEFAULT_RADIUS_ARCSEC,
    rivals: BorderRivals | None = None,
) -> PartitionMatch:
    """Match each spectrum of ``pixel`` to one imaging source within ``radius_arcsec``, one to one.

    Every spectrum must lie in ``pixel`` (else ``ValueError``); ``sources`` should hold the
    pixel's sources plus a margin of at least ``radius_arcsec`` (see :func:`in_pixel_with_margin`).
    Each spectrum takes its nearest source; when several spectra want the same source the
    closest pair wins and the others fall back to their next-nearest free source within the
    radius. This greedy closest-pair-first assignment gives each source at most one spectrum.
    Exact distance ties go to the lower spectrum index, then the lower source index.

    With ``rivals`` (the spectra of the neighbouring partitions), a source that a rival is
    nearer to than every spectrum here is dropped before the assignment (see the module
    docstring), so that each source is used once in the whole release.
    """
    radius = validate_radius(radius_arcsec)
    _require_inside(spectra, pixel)
    spec_i, src_j, sep = _candidate_pairs(spectra, sources, radius)
    rank = np.lexsort((src_j, spec_i, sep))  # closest pair first
    spec_i, src_j, sep = spec_i[rank], src_j[rank], sep[rank]
    border = (0, 0, 0)
    if rivals is not None:
        if rivals.targetid.shape != (len(spectra),):
            raise ValueError(
                f"BorderRivals has {rivals.targetid.size} TARGETIDs for {len(spectra)} spectra"
            )
        contested, ceded = _contested_sources(sources, rivals, radius, spec_i, src_j, sep)
        lost = np.isin(src_j, ceded)  # (P,) pairs whose source goes to the other side
        # Pairs are sorted by separation, so a spectrum's first pair is its nearest source.
        nearest = np.zeros(spec_i.size, dtype=bool)
        nearest[np.unique(spec_i, return_index=True)[1]] = True
        border = (contested.size, ceded.size, int(np.sum(nearest & lost)))
        spec_i, src_j, sep = spec_i[~lost], src_j[~lost], sep[~lost]
    spectrum_idx, source_idx, pair_sep, n_conflicts = _assign_greedy(
        spec_i, src_j, sep, len(spectra)
    )
    n_matched = int(spectrum_idx.size)
    return PartitionMatch(
        pixel=pixel,
        radius_arcsec=radius,
        spectrum_idx=spectrum_idx,
        source_idx=source_idx,
        sep_arcsec=pair_sep,
        n_spectra=len(spectra),
        n_matched=n_matched,
        n_unmatched=len(spectra) - n_matched,
        n_conflicts_resolved=n_conflicts,
        n_border_contested=border[0],
        n_border_ceded=border[1],
        n_border_losers=border[2],
    )


def id_agreement(
    match: PartitionMatch, spectra: SpectraPositions, sources: SourcePositions
) -> IdAgreement:
    """Among the matched pairs where both sides carry a source ID, how many IDs are equal."""
    if spectra.source_ids is None or sources.source_ids is None:
        return IdAgreement(n_both_have_ids=0, n_agree=0, rate=None)
    spec_ids, src_ids = spectra.source_ids, sources.source_ids
    si, sj = match.spectrum_idx, match.source_idx
    both = spec_ids.present()[si] & src_ids.present()[sj]
    same = (
        (spec_ids.release[si] == src_ids.release[sj])
        & (spec_ids.brickid[si] == src_ids.brickid[sj])
        & (spec_ids.objid[si] == src_ids.objid[sj])
    )
    n_both = int(both.sum())
    n_agree = int((both & same).sum())
    return IdAgreement(n_both, n_agree, n_agree / n_both if n_both else None)


def require_margin_covers_radius(radius_arcsec: float, margin_arcsec: float) -> None:
    """Raise ``ValueError`` naming both when ``radius_arcsec`` exceeds ``margin_arcsec``.

    ``margin_arcsec`` is the margin the imaging sources were loaded with. A spectrum near the
    border sees only the sources within the margin outside its pixel, so a wider radius would
    silently lose border pairs.
    """
    if radius_arcsec > margin_arcsec:
        raise ValueError(
            f"match radius_arcsec = {radius_arcsec} exceeds margin_arcsec = {margin_arcsec}, the "
            "margin the imaging sources were fetched with: pairs near the partition border would "
            "be lost; fetch the sources with a margin of at least the radius, or match within "
            "the margin"
        )


def in_pixel_with_margin(
    ra_deg: np.ndarray, dec_deg: np.ndarray, pixel: HealpixPixel, margin_arcsec: float
) -> np.ndarray:
    """(N,) bool: positions inside ``pixel`` or within ``margin_arcsec`` of its boundary.

    Rule: a position outside the pixel is kept when its distance to the nearest of a dense
    sample of the pixel's true (curved) HEALPix boundary is at most ``margin + spacing``,
    where ``spacing`` is the largest gap between consecutive samples (at most margin / 4
    unless capped). Every position truly within the margin is therefore kept; a few up to
    ``margin + spacing`` away may be kept too, which only adds harmless candidates.
    """
    ra, dec = validate_positions("ra_deg", "dec_deg", ra_deg, dec_deg)
    margin = validate_radius(margin_arcsec)
    inside = pixels_of(ra, dec, pixel.nside) == pixel.pixel
    outside = np.flatnonzero(~inside)
    if outside.size == 0:
        return inside
    boundary, spacing_arcsec = _boundary_samples(pixel, margin)
    tree = cKDTree(boundary)
    bound = chord_of_arcsec(margin + spacing_arcsec)
    dist, _ = tree.query(unit_vectors(ra[outside], dec[outside]), k=1, distance_upper_bound=bound)
    keep = inside.copy()
    keep[outside[np.isfinite(dist)]] = True
    return keep


def _require_inside(spectra: SpectraPositions, pixel: HealpixPixel) -> None:
    """Raise ``ValueError`` if any spectrum lies outside ``pixel``."""
    outside = np.flatnonzero(pixels_of(spectra.ra_deg, spectra.dec_deg, pixel.nside) != pixel.pixel)
    if outside.size:
        k = outside[0]
        raise ValueError(
            f"{outside.size} of {len(spectra)} spectra lie outside {pixel}, e.g. index {k}"
            f" at ra={spectra.ra_deg[k]:.6f}, dec={spectra.dec_deg[k]:.6f} deg"
        )


def _candidate_pairs(
    spectra: SpectraPositions, sources: SourcePositions, radius_arcsec: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (spectrum, source, sep_arcsec) pairs with ``sep <= radius``, as three (P,) arrays."""
    empty = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))
    if len(spectra) == 0 or len(sources) == 0:
        return empty
    spec_xyz = unit_vectors(spectra.ra_deg, spectra.dec_deg)  # (S, 3)
    src_xyz = unit_vectors(sources.ra_deg, sources.dec_deg)  # (N, 3)
    tree = cKDTree(src_xyz)
    bound = chord_of_arcsec(radius_arcsec) * (1.0 + 1e-9)
    todo = np.arange(len(spectra))
    k = _FIRST_K
    spec_parts, src_parts = [], []
    while todo.size:
        dist, slot = tree.query(spec_xyz[todo], k=min(k, len(sources)), distance_upper_bound=bound)
        dist, slot = dist.reshape(todo.size, -1), slot.reshape(todo.size, -1)  # (T, k)
        # A spectrum whose k-th candidate is still in bound may have more: ask again with 2k.
        saturated = np.isfinite(dist[:, -1]) & (dist.shape[1] < len(sources))
        done_rows = np.flatnonzero(~saturated)
        row, col = np.nonzero(np.isfinite(dist[done_rows]))
        spec_parts.append(todo[done_rows[row]])
        src_parts.append(slot[done_rows[row], col])
        todo = todo[saturated]
        k *= 2
    spec_i = np.concatenate(spec_parts).astype(np.int64)
    src_j = np.concatenate(src_parts).astype(np.int64)
    sep = separation_arcsec(spec_xyz[spec_i], src_xyz[src_j])
    keep = sep <= radius_arcsec
    return spec_i[keep], src_j[keep], sep[keep]


def _contested_sources(
    sources: SourcePositions,
    rivals: BorderRivals,
    radius_arcsec: float,
    spec_i: np.ndarray,
    src_j: np.ndarray,
    sep: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(contested, ceded): source indices within the radius of a spectrum here and of a rival,
    and those of them whose nearest spectrum, by (separation, TARGETID), is a rival.

    ``spec_i``, ``src_j``, ``sep`` are this partition's candidate pairs, sorted by separation.
    Separations are computed as for the partition's own pairs, from the same positions, so the
    partition on the other side of the border computes the same numbers and the same winner.
    """
    empty = np.empty(0, np.int64)
    if src_j.size == 0 or len(rivals.rivals) == 0:
        return empty, empty
    wanted = np.unique(src_j)  # (W,) sources some spectrum here can take
    src_xyz = unit_vectors(sources.ra_deg[wanted], sources.dec_deg[wanted])  # (W, 3)
    rival_xyz = unit_vectors(rivals.rivals.ra_deg, rivals.rivals.dec_deg)  # (R, 3)
    bound = chord_of_arcsec(radius_arcsec) * (1.0 + 1e-9)
    hits = cKDTree(rival_xyz).query_ball_point(src_xyz, r=bound)
    w_idx = np.repeat(np.arange(wanted.size), [len(h) for h in hits])
    r_idx = np.fromiter((r for h in hits for r in h), dtype=np.int64, count=w_idx.size)
    r_sep = separation_arcsec(rival_xyz[r_idx], src_xyz[w_idx]) if r_idx.size else np.empty(0)
    keep = r_sep <= radius_arcsec
    w_idx, r_idx, r_sep = w_idx[keep], r_idx[keep], r_sep[keep]
    if w_idx.size == 0:
        return empty, empty
    # The best claim of each side per source: smallest (separation, TARGETID).
    own_sep, own_tid = _best_claim(
        np.searchsorted(wanted, src_j), sep, rivals.targetid[spec_i], wanted.size
    )
    rival_sep, rival_tid = _best_claim(w_idx, r_sep, rivals.rival_targetid[r_idx], wanted.size)
    contested = np.isfinite(own_sep) & np.isfinite(rival_sep)
    rival_wins = contested & (
        (rival_sep < own_sep) | ((rival_sep == own_sep) & (rival_tid < own_tid))
    )
    return wanted[contested], wanted[rival_wins]


def _best_claim(
    source: np.ndarray, sep: np.ndarray, targetid: np.ndarray, n_sources: int
) -> tuple[np.ndarray, np.ndarray]:
    """The smallest (separation, TARGETID) claim on each of ``n_sources`` sources.

    ``source``, ``sep``, ``targetid`` (C,) list the claims. Returns ((n_sources,) float64 sep,
    inf where unclaimed; (n_sources,) int64 TARGETID, -1 where unclaimed).
    """
    best_sep = np.full(n_sources, np.inf)
    best_tid = np.full(n_sources, -1, dtype=np.int64)
    order = np.lexsort((targetid, sep, source))  # by source, then separation, then TARGETID
    source, sep, targetid = source[order], sep[order], targetid[order]
    first = np.r_[True, source[1:] != source[:-1]] if source.size else source.astype(bool)
    best_sep[source[first]] = sep[first]
    best_tid[source[first]] = targetid[first]
    return best_sep, best_tid


def _assign_greedy(
    spec_i: np.ndarray, src_j: np.ndarray, sep: np.ndarray, n_spectra: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Closest-pair-first one-to-one assignment over pairs already sorted by separation.

    Returns (spectrum_idx ascending, source_idx, sep_arcsec, n_conflicts_resolved). A pair is
    taken when neither its spectrum nor its source is taken yet; a spectrum "lost a conflict"
    when the first of its pairs (its nearest source) was skipped because the source was taken.
    """
    chosen_src = np.full(n_spectra, -1, dtype=np.int64)
    chosen_sep = np.zeros(n_spectra, dtype=np.float64)
    seen = np.zeros(n_spectra, dtype=bool)
    used_sources: set[int] = set()
    n_conflicts = 0
    for i, j, s in zip(spec_i.tolist(), src_j.tolist(), sep.tolist(), strict=True):
        first_choice = not seen[i]
        seen[i] = True
        if chosen_src[i] >= 0:
            continue
        if j in used_sources:
            n_conflicts += int(first_choice)
            continue
        chosen_src[i] = j
        chosen_sep[i] = s
        used_sources.add(j)
    spectrum_idx = np.flatnonzero(chosen_src >= 0).astype(np.int64)
    return spectrum_idx, chosen_src[spectrum_idx], chosen_sep[spectrum_idx], n_conflicts


def _boundary_samples(pixel: HealpixPixel, margin_arcsec: float) -> tuple[np.ndarray, float]:
    """(B, 3) unit vectors sampling the pixel's boundary, and the largest gap between them (arcsec)."""
    healpix = HEALPix(nside=pixel.nside, order="nested")
    corners_lon, corners_lat = healpix.boundaries_lonlat(pixel.pixel, step=1)
    corners = unit_vectors(corners_lon.deg.ravel(), corners_lat.deg.ravel())  # (4, 3)
    # Curved edges are a little longer than the corner-to-corner arcs; the measured gap below
    # is what the margin test uses, so this estimate only sets how dense the sample is.
    edge_arcsec = separation_arcsec(corners, np.roll(corners, -1, axis=0)).max() * 1.1
    step = int(np.ceil(edge_arcsec * _SAMPLES_PER_MARGIN / margin_arcsec))
    step = min(max(step, 1), _MAX_SAMPLES_PER_EDGE)
    lon, lat = healpix.boundaries_lonlat(pixel.pixel, step=step)
    samples = unit_vectors(lon.deg.ravel(), lat.deg.ravel())  # (4 * step, 3), a closed loop
    gap_arcsec = separation_arcsec(samples, np.roll(samples, -1, axis=0)).max()
    return samples, float(gap_arcsec)


__all__ = [
    "DEFAULT_MARGIN_ARCSEC",
    "DEFAULT_RADIUS_ARCSEC",
    "BorderRivals",
    "IdAgreement",
    "PartitionMatch",
    "SourceIds",
    "SourcePositions",
    "SpectraPositions",
    "id_agreement",
    "in_pixel_with_margin",
    "match_partition",
    "require_margin_covers_radius",
]
