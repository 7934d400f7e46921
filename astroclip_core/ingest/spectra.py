"""Spectra of one partition: fetch only the coadd files that hold its selected targets."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from astroclip_core import fsio
from astroclip_core.formats.desi import read_coadd_arrays
from astroclip_core.ingest.catalog import partition_targets
from astroclip_core.ingest.rawcache import record_raw_files
from astroclip_core.results import StepResult
from astroclip_core.sources.fetch import FailureRecord, failures_table
from astroclip_core.sources.http import FetchError, RetryPolicy
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.interim import write_failures, write_interim
from astroclip_core.tables.schemas import encode_blob

log = logging.getLogger(__name__)
STAGE = "spectra"


def fetch_partition_spectra(
    source, layout: StorageLayout, pixel: int, policy: RetryPolicy | None = None
) -> StepResult:
    """Download the needed coadds of one pixel, merge arms, write ``interim/spectra``.

    Targets are grouped by (survey, program, nside-64 HEALPIX) from the catalogue, so each
    coadd file is fetched once and only the selected rows are read from it.
    Output columns: targetid, flux, ivar (float32 blobs, 7781) and mask (uint8 blob).
    """
    release = source.release.name
    targets = partition_targets(layout, release, pixel)
    keys = np.rec.fromarrays(
        [
            targets.column(c).to_numpy(zero_copy_only=False)
            for c in ("survey", "program", "healpix")  # catalogue HEALPIX: the nside-64 coadd pixel
        ],
        names="survey,program,coadd_pixel",
    )
    tids = targets.column("targetid").to_numpy()
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    groups = sorted(set(keys.tolist()))
    failures: list[FailureRecord] = []
    used: list[str] = []  # raw cache files read: this partition's own (for rawcache eviction)
    for i, (survey, program, coadd_pixel) in enumerate(groups, 1):
        in_file = (keys.survey == survey) & (keys.program == program)
        want = tids[in_file & (keys.coadd_pixel == coadd_pixel)]
        try:
            cached = source.fetch_coadd(layout, survey, program, int(coadd_pixel), policy=policy)
        except FetchError as err:
            # Recorded, not fatal: the partition goes on with the other coadd files.
            failures.append(
                FailureRecord(
                    "coadd", f"{survey}-{program}-{coadd_pixel}", err.url, err.problem, err.attempts
                )
            )
            log.warning(
                "spectra %s-%d: coadd %s-%s-%d failed: %s",
                release,
                pixel,
                survey,
                program,
                coadd_pixel,
                err.problem,
            )
            continue
        used.append(cached)
        with fsio.local_copy(cached) as path:
            arrays = read_coadd_arrays(path, targetids=want)
        parts.append((arrays.targetid, arrays.flux, arrays.ivar, arrays.mask))
        log.info(
            "spectra %s-%d: coadd %d/%d (%s-%s-%d): %d spectra",
            release,
            pixel,
            i,
            len(groups),
            survey,
            program,
            coadd_pixel,
            len(arrays.targetid),
        )
    if parts:
        tid, flux, ivar, mask = (np.concatenate(x) for x in zip(*parts, strict=True))
    else:
        tid, flux, ivar, mask = (
            np.empty((0,), np.int64),
            np.empty((0, 7781), np.float32),
            np.empty((0, 7781), np.float32),
            np.empty((0, 7781), np.uint8),
        )
    table = pa.table(
        {
            "targetid": pa.array(tid, pa.int64()),
            "flux": encode_blob("flux", flux),
            "ivar": encode_blob("ivar", ivar),
            "mask": encode_blob("mask", (mask != 0).astype(np.uint8)),
        }
    )
    size = write_interim(layout, STAGE, release, pixel, table)
    write_failures(layout, STAGE, release, pixel, failures_table(failures))
    record_raw_files(layout, release, pixel, STAGE, used)
    return StepResult(
        {"path": layout.interim_file(release, pixel, STAGE)},
        table.num_rows,
        size,
        {
            "coadd_files": len(groups),
            "coadd_files_failed": len(failures),
            "targets_selected": len(tids),
            "spectra_missing": int(len(set(tids.tolist()) - set(tid.tolist()))),
        },
    )
