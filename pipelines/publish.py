"""Stage 3: the Hugging Face dataset of a release (Parquet shards + dataset card)."""

import dagster as dg

from astroclip_core.publish.hats import write_release_hats
from astroclip_core.publish.hub import HubSettings, hub_settings_from_env
from astroclip_core.publish.steps import publish_release
from pipelines.metadata import materialize
from pipelines.partitions import releases_partitions
from pipelines.resources import DesiSourceResource, SampleSkyResource, StorageResource


class HubResource(dg.ConfigurableResource):
    """Pushes to the Hugging Face Hub when ``HF_REPO_ID`` and ``HF_TOKEN`` are set.

    The settings are read from the environment when the step runs, so the token never enters
    Dagster config (which the UI displays), logs or metadata.
    """

    def settings(self) -> HubSettings | None:
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
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    hub: HubResource,
    desi: DesiSourceResource,
    sample_sky: SampleSkyResource,
) -> dg.MaterializeResult:
    release = desi.release_for(context.partition_key, sample_sky)  # the card names its production
    result = publish_release(storage.layout(), release, hub.settings())
    context.log.info(
        f"wrote {result.rows} rows to {result.path}; pushed to the Hub: "
        f"{result.metadata['pushed']} ({result.metadata['push_detail']})"
    )
    return materialize(result)


@dg.asset(
    partitions_def=releases_partitions,
    deps=[
        dg.AssetDep("pairs", partition_mapping=dg.AllPartitionMapping()),
        dg.AssetDep("embeddings", partition_mapping=dg.AllPartitionMapping()),
    ],
    group_name="publish",
    kinds={"parquet", "hats"},
    description="Writes the release's HATS catalogues for lsdb, each with a 10 arcsec margin "
    "cache: the pairs' catalogue columns (targetid, positions, redshift, fluxes, split) as "
    "hats/<release>/pairs and each model's embeddings as hats/<release>/embeddings/<model>.",
)
def hats_catalogs(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    result = write_release_hats(storage.layout(), context.partition_key)
    context.log.info(f"wrote {len(result.outputs)} HATS catalogues under {result.path}")
    return materialize(result)
