"""Shared helpers for the pipeline tests: a tiny sample sky and resources pointing at it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from astroclip_core.samplesky.service import ensure_published
from pipelines.publish import HubResource
from pipelines.resources import (
    DesiSourceResource,
    LegacySurveySourceResource,
    RetrySettings,
    SampleSkyResource,
    StorageResource,
)

TINY = "tiny"
# Retries sized for loopback servers: short timeouts, short backoff (keeps fault tests fast).
FAST_RETRY = RetrySettings(
    max_attempts=6,
    backoff_base_s=0.05,
    backoff_max_s=0.5,
    connect_timeout_s=2.0,
    read_timeout_s=0.5,
)
# The pipeline tests' default: the same fast backoff, but a read timeout that a cutout rendered by
# the sample sky's single-process server (GIL-bound, 4 requests at once) meets on a loaded 2-core
# machine. Fault tests that need a stall past the timeout pass FAST_RETRY.
LOOPBACK_RETRY = RetrySettings(
    max_attempts=6,
    backoff_base_s=0.05,
    backoff_max_s=0.5,
    connect_timeout_s=2.0,
    read_timeout_s=10.0,
)


def make_tiny_sky(root: Path, releases: list[str]) -> Path:
    """Generate the tiny sample sky's ``releases`` under ``root``."""
    ensure_published(root, releases, size=TINY)
    return root


def resources(
    storage_root: str,
    sky_root: Path,
    desi_url: str = "",
    sweep_url: str = "",
    cutout_url: str = "",
    s3_endpoint_url: str = "",
    retry: RetrySettings = LOOPBACK_RETRY,
) -> dict[str, dg.ConfigurableResource]:
    """Resources over a storage root and a tiny sample sky (optionally other source URLs)."""
    return {
        "storage": StorageResource(root=storage_root),
        "sample_sky": SampleSkyResource(root=str(sky_root), size=TINY, releases=["edr"]),
        "desi": DesiSourceResource(root_url=desi_url, s3_endpoint_url=s3_endpoint_url, retry=retry),
        "legacysurvey": LegacySurveySourceResource(
            sweep_root_url=sweep_url,
            cutout_url=cutout_url,
            retry=retry,
            max_concurrent_requests=4,
        ),
        "hub": HubResource(),
    }


def read_pairs_folder(url: str, filesystem=None) -> pa.Table:
    """All pairs under a release's hive folder, sorted by targetid."""
    table = pads.dataset(
        url, filesystem=filesystem, format="parquet", partitioning="hive"
    ).to_table()
    return table.sort_by("targetid")


def tables_equal(a: pa.Table, b: pa.Table) -> bool:
    """Row-for-row equality of two tables over a's columns (NaN equal to NaN)."""
    if a.num_rows != b.num_rows:
        return False
    for name in a.column_names:
        x, y = a.column(name).combine_chunks(), b.column(name).combine_chunks()
        if pa.types.is_floating(x.type):
            if not np.array_equal(
                x.to_numpy(zero_copy_only=False), y.to_numpy(zero_copy_only=False), equal_nan=True
            ):
                return False
        elif not x.equals(y.cast(x.type)):
            return False
    return True
