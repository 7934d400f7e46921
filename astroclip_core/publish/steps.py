"""The release-level publish step the orchestration calls: build the dataset, then push it."""

from __future__ import annotations

import logging

from astroclip_core.publish.dataset import build_hf_dataset
from astroclip_core.publish.hub import HubSettings, push_to_hub
from astroclip_core.releases import Release
from astroclip_core.results import SmallTable, StepResult
from astroclip_core.storage import StorageLayout

log = logging.getLogger(__name__)


def publish_release(
    layout: StorageLayout, release: Release, hub: HubSettings | None = None
) -> StepResult:
    """Write ``release``'s pairs as a Hugging Face dataset under ``hf/<release>/``; push it.

    The push happens only with ``hub`` settings; the result says whether it did and why. The
    token is never part of the result.
    """
    info = build_hf_dataset(layout.pairs_dir(release.name), layout.hf_dir(release.name), release)
    log.info("wrote %d rows in %d files to %s", info.num_examples, len(info.files), info.out_dir)
    push = push_to_hub(
        info.out_dir,
        hub.repo_id if hub else None,
        hub.token if hub else None,
        hub.endpoint if hub else None,
    )
    log.info("push to hub: %s (%s)", "done" if push.pushed else "skipped", push.reason)
    return StepResult(
        outputs={"path": info.out_dir},
        rows=info.num_examples,
        size_bytes=info.download_size_bytes,
        metadata={
            "splits": SmallTable(
                ("split", "rows", "shards", "parquet bytes"),
                tuple((s.name, s.num_examples, s.num_shards, s.parquet_bytes) for s in info.splits),
            ),
            "download_size_bytes": info.download_size_bytes,
            "pushed": push.pushed,
            "push_detail": push.reason,
            "repo_id": push.repo_id or "",
        },
    )
