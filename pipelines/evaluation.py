"""Stage 5: the evaluation report of a release's current model."""

import dagster as dg

from astroclip_core.evaluation.steps import evaluate_release
from astroclip_core.model.pretrained import CARD_NAME
from astroclip_core.publish.model_hub import model_hub_settings_from_env, push_release_model
from astroclip_core.training.steps import current_model
from pipelines.metadata import materialize
from pipelines.partitions import releases_partitions
from pipelines.resources import DesiSourceResource, SampleSkyResource, StorageResource


@dg.asset(
    partitions_def=releases_partitions,
    deps=[dg.AssetDep("embeddings", partition_mapping=dg.AllPartitionMapping())],
    group_name="evaluation",
    kinds={"json", "png"},
    description="Zero-shot k-NN regression (redshift and, on the sample sky, true properties), "
    "cross-modal retrieval and figures; writes reports/<release>/<model>/evaluation.json.",
)
def evaluation(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    desi: DesiSourceResource,
    sample_sky: SampleSkyResource,
) -> dg.MaterializeResult:
    release = context.partition_key
    layout = storage.layout()
    ref = current_model(layout, release)
    # Truth (true stellar mass, metallicity, sSFR) exists only for the sample sky.
    truth = None if desi.root_url else sample_sky.truth_path(release)
    result = evaluate_release(layout, release, ref.name, truth_url=truth)
    context.log.info(f"evaluated {ref.name} on {release}: {result.path}")
    # The training asset pushed the model with a card that had no evaluation yet; the card now
    # has it, so it alone is pushed again (when HF_MODEL_REPO_ID and HF_TOKEN are set).
    push_md: dict = {}
    if "model_card" in result.outputs:
        push, push_md = push_release_model(
            layout, release, ref.name, model_hub_settings_from_env(), only=(CARD_NAME,)
        )
        context.log.info(f"model card push: {push.reason} {push.repo_id or ''}")
    return materialize(result, extra=push_md)
