"""Stage 5: the evaluation report of a release's current model."""

import dagster as dg
from pydantic import Field

from astroclip_core.evaluation.baselines import BaselinesConfig, CnnConfig, MlpConfig
from astroclip_core.evaluation.steps import COMPARISON_KEY, evaluate_release
from astroclip_core.model.pretrained import CARD_NAME
from astroclip_core.publish.model_hub import model_hub_settings_from_env, push_release_model
from astroclip_core.training.steps import current_model
from pipelines.metadata import materialize
from pipelines.partitions import releases_partitions
from pipelines.resources import DesiSourceResource, SampleSkyResource, StorageResource

# Read for its defaults only: every default below is the library's.
_CNN = CnnConfig()


class EvaluationConfig(dg.Config):
    """The supervised CNN's compute budget and the baselines' seed (defaults: the library's)."""

    cnn_epochs: int = Field(default=_CNN.epochs, description="Supervised CNN training epochs.")
    cnn_batch_size: int = Field(default=_CNN.batch_size, description="CNN images per step.")
    cnn_crop_pix: int = Field(default=_CNN.crop_pix, description="CNN centre crop, pixels.")
    cnn_bin_factor: int = Field(default=_CNN.bin_factor, description="CNN input binning.")
    seed: int = Field(default=_CNN.seed, description="Seed of the MLP and CNN baselines.")

    def baselines(self) -> BaselinesConfig:
        """The library's baselines config with these settings."""
        cnn = CnnConfig(
            epochs=self.cnn_epochs,
            batch_size=self.cnn_batch_size,
            crop_pix=self.cnn_crop_pix,
            bin_factor=self.cnn_bin_factor,
            seed=self.seed,
        )
        return BaselinesConfig(mlp=MlpConfig(seed=self.seed), cnn=cnn)


@dg.asset(
    partitions_def=releases_partitions,
    deps=[dg.AssetDep("embeddings", partition_mapping=dg.AllPartitionMapping())],
    group_name="evaluation",
    kinds={"json", "png"},
    description="Zero-shot k-NN regression (redshift and, on the sample sky, true properties), "
    "MLP probes, photometry and supervised-CNN baselines, cross-modal retrieval and figures; "
    "writes reports/<release>/<model>/evaluation.json.",
)
def evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    storage: StorageResource,
    desi: DesiSourceResource,
    sample_sky: SampleSkyResource,
) -> dg.MaterializeResult:
    release = context.partition_key
    layout = storage.layout()
    ref = current_model(layout, release)
    # Truth (true stellar mass, metallicity, sSFR) exists only for the sample sky.
    truth = None if desi.root_url else sample_sky.truth_path(release)
    result = evaluate_release(
        layout, release, ref.name, truth_url=truth, baselines=config.baselines()
    )
    context.log.info(f"evaluated {ref.name} on {release}: {result.path}")
    # The training asset pushed the model with a card that had no evaluation yet; the card now
    # has it, so it alone is pushed again (when HF_MODEL_REPO_ID and HF_TOKEN are set).
    # The library keeps the paper-comparison table a plain string; Dagster renders it.
    extra: dict = {COMPARISON_KEY: dg.MetadataValue.md(str(result.metadata[COMPARISON_KEY]))}
    if "model_card" in result.outputs:
        push, push_md = push_release_model(
            layout, release, ref.name, model_hub_settings_from_env(), only=(CARD_NAME,)
        )
        extra |= push_md
        context.log.info(f"model card push: {push.reason} {push.repo_id or ''}")
    return materialize(result, extra=extra)
