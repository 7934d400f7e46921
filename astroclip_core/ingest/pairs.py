"""Pairs of one partition: join catalogue, match, spectrum and cutout; check; write atomically."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from astroclip_core.ingest.catalog import partition_targets
from astroclip_core.ingest.cutouts import STAGE as CUTOUTS_STAGE
from astroclip_core.ingest.partitionlock import partition_lock
from astroclip_core.ingest.rawcache import (
    DEFAULT_RAW_CACHE,
    RawCachePolicy,
    apply_after_pairs,
    evict_interim,
)
from astroclip_core.ingest.spectra import STAGE as SPECTRA_STAGE
from astroclip_core.results import CheckOutcome, Figure, MetadataEntry, SmallTable, StepResult
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.interim import interim_version, read_failures, read_interim
from astroclip_core.tables.pairs import write_pairs
from astroclip_core.tables.schemas import IMAGE_SHAPE, MATCHES_SCHEMA, PAIRS_SCHEMA, decode_blob
from astroclip_core.tables.splits import split_of

log = logging.getLogger(__name__)

# The interim tables the pairs table holds again, row for row (evicted after pairs), and how
# often one is fetched again when it keeps vanishing (runs of the partition on other machines).
BLOB_STAGES = (SPECTRA_STAGE, CUTOUTS_STAGE)
REDERIVE_TRIES = 3
# stage -> a call that runs that step again for the partition (fetch, write interim/<stage>).
Rederive = Mapping[str, Callable[[], object]]

PAIRS_CHECKS: dict[str, str] = {
    "targetid_unique": "Every targetid appears once.",
    "image_valid": "Every image is (3,152,152), finite, with at least one band not all zeros.",
    "flux_finite_where_ivar": "Flux is finite wherever ivar > 0.",
    "redshift_in_selection": "Every redshift lies inside the selection range.",
    "rows_equal_matches": "Row count equals the matches less the recorded fetch failures.",
}


def _join(left: pa.Table, right: pa.Table) -> pa.Table:
    return left.join(right, "targetid", join_type="inner")


def build_pairs_table(
    targets: pa.Table, matches: pa.Table, spectra: pa.Table, cutouts: pa.Table, pixel: int
) -> pa.Table:
    """Join the four inputs on targetid into rows of the pairs schema (not yet cast)."""
    cat = targets.select(["targetid", "target_ra", "target_dec", "z", "zerr", "survey", "program"])
    m = matches.select(MATCHES_SCHEMA.names)
    # Blob columns are joined by position, not through Arrow's hash join (which copies them).
    base = _join(cat, m)
    base = base.take(pc.sort_indices(base, [("targetid", "ascending")]))
    tid = base.column("targetid").to_numpy()
    cols = {name: base.column(name) for name in base.column_names}
    for table, names in ((spectra, ["flux", "ivar", "mask"]), (cutouts, ["image"])):
        order = np.argsort(table.column("targetid").to_numpy(), kind="stable")
        sorted_tid = table.column("targetid").to_numpy()[order]
        pos = np.searchsorted(sorted_tid, tid)
        have = (pos < len(sorted_tid)) & (sorted_tid[np.minimum(pos, len(sorted_tid) - 1)] == tid)
        tid, keep = tid[have], np.flatnonzero(have)
        cols = {k: v.take(pa.array(keep)) for k, v in cols.items()}
        idx = pa.array(order[pos[have]])
        for name in names:
            cols[name] = table.column(name).take(idx)
    cols["healpix"] = pa.array(np.full(len(tid), pixel, np.int32))
    cols["split"] = pa.array(split_of(tid), pa.string())
    return pa.table(cols)


def check_pairs(
    table: pa.Table, n_expected: int, z_range: tuple[float, float]
) -> list[CheckOutcome]:
    """Run the :data:`PAIRS_CHECKS` on a pairs table."""
    out = []
    tid = table.column("targetid").to_numpy()
    dup = len(tid) - len(np.unique(tid))
    out.append(CheckOutcome("targetid_unique", dup == 0, f"{dup} duplicated targetids"))
    img = decode_blob("image", table.column("image"))
    flat = img.reshape(len(img), IMAGE_SHAPE[0], -1)
    bad_shape = img.shape[1:] != IMAGE_SHAPE
    nonfinite = int((~np.isfinite(flat).all(axis=(1, 2))).sum())
    all_zero = int((~(flat != 0).any(axis=2)).all(axis=1).sum())
    out.append(
        CheckOutcome(
            "image_valid",
            not bad_shape and nonfinite == 0 and all_zero == 0,
            f"shape {img.shape[1:]}, {nonfinite} non-finite, {all_zero} all-zero",
        )
    )
    flux = decode_blob("flux", table.column("flux"))
    ivar = decode_blob("ivar", table.column("ivar"))
    bad_flux = int((~np.isfinite(flux) & (ivar > 0)).any(axis=1).sum())
    out.append(
        CheckOutcome(
            "flux_finite_where_ivar", bad_flux == 0, f"{bad_flux} spectra with non-finite flux"
        )
    )
    z = table.column("z").to_numpy()
    outside = int(((z < z_range[0]) | (z > z_range[1]) | ~np.isfinite(z)).sum())
    out.append(
        CheckOutcome(
            "redshift_in_selection", outside == 0, f"{outside} outside [{z_range[0]}, {z_range[1]}]"
        )
    )
    out.append(
        CheckOutcome(
            "rows_equal_matches",
            table.num_rows == n_expected,
            f"{table.num_rows} rows, {n_expected} expected",
        )
    )
    return out


def preview_png(table: pa.Table, n: int = 6) -> bytes | None:
    """A PNG grid of up to ``n`` pairs (RGB image beside its spectrum), or None when empty."""
    if table.num_rows == 0:
        return None
    from astroclip_core.plots import pairs_figure, render_png

    rows = table.slice(0, min(n, table.num_rows))
    fig = pairs_figure(
        decode_blob("image", rows.column("image")),
        decode_blob("flux", rows.column("flux")),
        decode_blob("ivar", rows.column("ivar")),
        rows.column("z").to_numpy(),
        rows.column("targetid").to_numpy(),
    )
    return render_png(fig, dpi=80)


def _read_blob_input(
    layout: StorageLayout, stage: str, release: str, pixel: int, rederive: Rederive
) -> tuple[pa.Table, str, bool]:
    """One of :data:`BLOB_STAGES`' tables as (table, version read, fetched again here?).

    A table evicted after an earlier pairs run is made again by ``rederive[stage]`` (the
    step's own library call); without one, FileNotFoundError says what to materialize.
    """
    rederived = False
    for _ in range(REDERIVE_TRIES):
        version = interim_version(layout, stage, release, pixel)
        if version is not None:
            try:
                return read_interim(layout, stage, release, pixel), version, rederived
            except FileNotFoundError:  # evicted between the two calls (a run elsewhere)
                pass
        if stage not in rederive:
            raise FileNotFoundError(
                f"{layout.interim_file(release, pixel, stage)} does not exist (never made, or "
                f"evicted after an earlier pairs run): materialize '{stage}' for "
                f"{release}-{pixel} first"
            )
        log.info("pairs %s-%d: interim %s missing; running %s again", release, pixel, stage, stage)
        rederive[stage]()
        rederived = True
    raise FileNotFoundError(
        f"{layout.interim_file(release, pixel, stage)} vanished {REDERIVE_TRIES} times after "
        f"being made again: another run of {release}-{pixel} keeps evicting it"
    )


def assemble_pairs(
    layout: StorageLayout,
    release: str,
    pixel: int,
    raw_cache: RawCachePolicy | None = None,
    rederive: Rederive | None = None,
) -> StepResult:
    """Build, check and write the partition's pairs file (``StorageLayout.pairs_file``).

    The result carries the :data:`PAIRS_CHECKS` outcomes; ``failed_objects`` counts matches
    without a pair (their cutout or coadd file could not be had). Then ``raw_cache`` (default
    :data:`~astroclip_core.ingest.rawcache.DEFAULT_RAW_CACHE`) is applied to the raw files of
    the partition's spectra and cutouts steps and to their interim tables, and what it did goes
    into the metadata (``raw_cache_policy``, ``raw_files_removed``, ``interim_removed``, ...).

    An interim spectra or cutouts table that is missing (evicted after an earlier pairs run)
    is made again by ``rederive[stage]`` before it is read (``interim_rederived`` in the
    metadata). Read, write and eviction hold :func:`~astroclip_core.ingest.partitionlock.
    partition_lock`, so two runs of one partition on one machine never evict what the other
    is about to read.
    """
    with partition_lock(layout, release, pixel):
        return _assemble_locked(
            layout, release, pixel, raw_cache or RawCachePolicy.parse(DEFAULT_RAW_CACHE), rederive
        )


def _assemble_locked(
    layout: StorageLayout,
    release: str,
    pixel: int,
    raw_cache: RawCachePolicy,
    rederive: Rederive | None,
) -> StepResult:
    import json

    from astroclip_core import fsio

    blobs = {s: _read_blob_input(layout, s, release, pixel, rederive or {}) for s in BLOB_STAGES}
    spectra, cutouts = blobs[SPECTRA_STAGE][0], blobs[CUTOUTS_STAGE][0]
    targets = partition_targets(layout, release, pixel)
    matches = read_interim(layout, "matches", release, pixel)
    table = build_pairs_table(targets, matches, spectra, cutouts, pixel)
    written = write_pairs(layout, release, pixel, table)
    selection = json.loads(fsio.read_bytes(layout.catalog_report(release)))["selection"]
    # Expected rows, counted independently of the join: every match, less the objects whose
    # cutout failed (failures table) and those whose coadd file failed (no spectrum).
    matched = set(matches.column("targetid").to_pylist())
    cut_failed = {
        int(k) for k in read_failures(layout, "cutouts", release, pixel).column("key").to_pylist()
    }
    no_spectrum = matched - set(spectra.column("targetid").to_pylist())
    n_failed = len((cut_failed & matched) | no_spectrum)
    # A disabled redshift cut (None) bounds nothing.
    z_range = (
        -np.inf if selection["z_min"] is None else selection["z_min"],
        np.inf if selection["z_max"] is None else selection["z_max"],
    )
    checks = check_pairs(table, len(matched) - n_failed, z_range)
    log.info(
        "pairs %s-%d: wrote %d pairs (%d matches, %d cutout failures)",
        release,
        pixel,
        written.n_rows,
        matches.num_rows,
        n_failed,
    )
    metadata: dict[str, MetadataEntry] = {
        "matches": matches.num_rows,
        "failed_objects": n_failed,
        "schema": PAIRS_SCHEMA,
        "checks": SmallTable(
            ("check", "passed", "detail"), tuple((c.name, c.passed, c.detail) for c in checks)
        ),
    }
    preview = preview_png(table)
    if preview is not None:
        metadata["sample_pairs"] = Figure(preview, "sample pairs")
    pairs_ok = all(c.passed for c in checks)
    raw = apply_after_pairs(layout, raw_cache, release, pixel, BLOB_STAGES, pairs_ok)
    metadata.update(raw.metadata())
    versions = {stage: version for stage, (_, version, _) in blobs.items()}
    interim = evict_interim(layout, raw_cache, release, pixel, versions, pairs_ok)
    metadata.update(interim.metadata())
    again = [s for s, (*_, rederived) in blobs.items() if rederived]
    metadata["interim_rederived"] = ", ".join(again) or "none"
    return StepResult(
        outputs={"path": written.path},
        rows=written.n_rows,
        size_bytes=written.size_bytes,
        metadata=metadata,
        checks=tuple(checks),
    )
