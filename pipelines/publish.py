"""Stage 3: the Hugging Face dataset of a release (Parquet shards + dataset card)."""

import dagster as dg

from astroclip_core.publish.dataset import build_hf_dataset
from astroclip_core.publish.hub import hub_settings_from_env, push_to_hub
from pipelines.metadata import table_md
from pipelines.partitions import releases_partitions
from pipelines.resources import StorageResource


class HubResource(dg.ConfigurableResource):
    """Pushes to the Hugging Face Hub when ``HF_REPO_ID`` and ``HF_TOKEN`` are set.

    The settings are read from the environment when the step runs, so the token never enters
    Dagster config (which the UI displays), logs or metadata.
    """

    def settings(self):
        """The Hub settings from the environment, or None when not configured."""
        return hub_settings_from_env()


@dg.asset(
    partitions_def=releases_partitions,
    deps=[dg.AssetDep("pairs", partition_mapping=dg.AllPartitionMapping())],
    group_name="publish",
    kinds={"parquet", "huggingface"},
    description="Writes the release's pairs as a Hugging Face dataset (typed features, "
    "deterministic TARGETID-hash train/test split, dataset card) under hf/<release>/, and "
    "pushes it to the Hub only when HF_REPO_ID and HF_TOKEN are set.",
)
def hf_dataset(
    context: dg.AssetExecutionContext, storage: StorageResource, hub: HubResource
) -> dg.MaterializeResult:
    release = context.partition_key
    layout = storage.layout()
    info = build_hf_dataset(layout.pairs_dir(release), layout.hf_dir(release), release)
    context.log.info(f"wrote {info.num_examples} rows in {len(info.files)} files to {info.out_dir}")
    settings = hub.settings()
    push = push_to_hub(
        info.out_dir,
        settings.repo_id if settings else None,
        settings.token if settings else None,
        settings.endpoint if settings else None,
    )
    context.log.info(f"push to hub: {'done' if push.pushed else 'skipped'} ({push.reason})")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(info.out_dir),
            "rows": info.num_examples,
            "splits": table_md(
                ["split", "rows", "shards", "parquet bytes"],
                [(s.name, s.num_examples, s.num_shards, s.parquet_bytes) for s in info.splits],
            ),
            "download_size_bytes": info.download_size_bytes,
            "pushed": push.pushed,
            "push_detail": push.reason,
            "repo_id": push.repo_id or "",
        }
    )
