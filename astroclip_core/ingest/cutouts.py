"""Cutouts of one partition: one g,r,z stamp per matched imaging source."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from astroclip_core.ingest.bricks import DEFAULT_IMAGING, fetch_images
from astroclip_core.ingest.rawcache import record_raw_files
from astroclip_core.results import StepResult
from astroclip_core.sources.fetch import FailureRecord, failures_table
from astroclip_core.sources.http import RetryPolicy
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.interim import read_interim, write_failures, write_interim
from astroclip_core.tables.schemas import encode_blob

log = logging.getLogger(__name__)
STAGE = "cutouts"
BRICKS_STAGE = "bricks"  # failures table of the brick images (key: relative path)


def fetch_partition_cutouts(
    source,
    layout: StorageLayout,
    release: str,
    pixel: int,
    concurrency: int,
    policy: RetryPolicy | None = None,
    log=log,
    imaging: str = DEFAULT_IMAGING,
) -> StepResult:
    """Fetch (or take from the cache) a cutout at each matched source; write ``interim/cutouts``.

    ``imaging`` (auto, service or bricks) says whether stamps come from the cutout service or
    are cut from DR9 coadd bricks; ``auto`` applies the cost rule of
    :mod:`astroclip_core.ingest.bricks`, and the decision goes into the metadata. Objects whose
    cutout cannot be had after retries (or whose every band is empty) are left out and recorded
    with the reason in the failures table (``StorageLayout.failures_file``); brick images that
    cannot be had go to the ``bricks`` failures table; the partition goes on. Output columns:
    targetid, image (float32 blob (3,152,152), nanomaggies).
    """
    matches = read_interim(layout, "matches", release, pixel)
    tid = matches.column("targetid").to_numpy()
    ra = matches.column("ra").to_numpy()
    dec = matches.column("dec").to_numpy()
    fetched = fetch_images(source, layout, ra, dec, imaging, concurrency, policy)
    batch = fetched.batch
    ok = np.asarray(batch.ok, dtype=bool)
    # A stamp with no data in any band is no image at all: treat it as a failure.
    empty = np.zeros(len(tid), dtype=bool)
    if ok.any():
        images = np.asarray(batch.images)
        empty[ok] = ~np.any(images.reshape(len(images), -1) != 0, axis=1)
    reasons = list(batch.reasons)
    for i in np.flatnonzero(empty):
        reasons[i] = "cutout has no data in any band"
    good = ok & ~empty
    images_good = (
        np.asarray(batch.images)[good[ok]] if ok.any() else np.empty((0, 3, 152, 152), np.float32)
    )
    table = pa.table(
        {"targetid": pa.array(tid[good], pa.int64()), "image": encode_blob("image", images_good)}
    )
    size = write_interim(layout, STAGE, release, pixel, table)
    failed = np.flatnonzero(~good)
    # Key = TARGETID, so the pairs step can account for every missing object.
    records = [
        FailureRecord(
            "cutout", str(int(tid[i])), batch.urls[i], str(reasons[i]), int(batch.attempts[i])
        )
        for i in failed
    ]
    failures_path = write_failures(layout, STAGE, release, pixel, failures_table(records))
    write_failures(layout, BRICKS_STAGE, release, pixel, failures_table(fetched.brick_failures))
    # The cached cutouts (one per matched source) and the brick images are this partition's
    # own, so `evict` deletes them once its pairs are written, as the policy asks. A
    # brick on a partition border is then fetched again by the neighbour that needs it; a
    # size cap (`<N>gb`) keeps such bricks instead.
    cached = [
        layout.cutout_cache(source.dr, source.layer, key)
        for key, got in zip(batch.keys, ok, strict=True)
        if got and fetched.choice.mode == "service"
    ]
    record_raw_files(layout, release, pixel, STAGE, cached + list(fetched.brick_cache_files))
    log.info(
        f"cutouts {release}-{pixel}: fetched {int(good.sum())}/{len(tid)} ({len(failed)} failed)"
    )
    return StepResult(
        {"path": layout.interim_file(release, pixel, STAGE)},
        table.num_rows,
        size,
        {
            "requested": len(tid),
            "failed": len(failed),
            "failures_path": failures_path,
            **fetched.metadata(),
        },
    )
