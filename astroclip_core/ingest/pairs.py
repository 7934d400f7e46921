"""Pairs of one partition: join catalogue, match, spectrum and cutout; check; write atomically."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from astroclip_core.ingest.catalog import partition_targets
from astroclip_core.ingest.cutouts import STAGE as CUTOUTS_STAGE
from astroclip_core.ingest.rawcache import DEFAULT_RAW_CACHE, RawCachePolicy, apply_after_pairs
from astroclip_core.ingest.spectra import STAGE as SPECTRA_STAGE
from astroclip_core.results import CheckOutcome, Figure, MetadataEntry, SmallTable, StepResult
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.interim import read_failures, read_interim
from astroclip_core.tables.pairs import write_pairs
from astroclip_core.tables.schemas import IMAGE_SHAPE, MATCHES_SCHEMA, PAIRS_SCHEMA, decode_blob
from astroclip_core.tables.splits import split_of

log = logging.getLogger(__name__)

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


def assemble_pairs(
    layout: StorageLayout, release: str, pixel: int, raw_cache: RawCachePolicy | None = None
) -> StepResult:
    """Build, check and write the partition's pairs file (``StorageLayout.pairs_file``).

    The result carries the :data:`PAIRS_CHECKS` outcomes; ``failed_objects`` counts matches
    without a pair (their cutout or coadd file could not be had). Then ``raw_cache`` (default
    :data:`~astroclip_core.ingest.rawcache.DEFAULT_RAW_CACHE`) is applied to the raw files of
    the partition's spectra and cutouts steps, and what it did goes into the metadata
    (``raw_cache_policy``, ``raw_files_removed``, ``raw_mb_removed``, ...).
    """
    import json

    from astroclip_core import fsio

    targets = partition_targets(layout, release, pixel)
    matches = read_interim(layout, "matches", release, pixel)
    spectra = read_interim(layout, "spectra", release, pixel)
    cutouts = read_interim(layout, "cutouts", release, pixel)
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
    raw = apply_after_pairs(
        layout,
        raw_cache or RawCachePolicy.parse(DEFAULT_RAW_CACHE),
        release,
        pixel,
        (SPECTRA_STAGE, CUTOUTS_STAGE),
        pairs_ok=all(c.passed for c in checks),
    )
    metadata.update(raw.metadata())
    return StepResult(
        outputs={"path": written.path},
        rows=written.n_rows,
        size_bytes=written.size_bytes,
        metadata=metadata,
        checks=tuple(checks),
    )
