"""Stage 4: the contrastive model of a release and the embeddings of every partition."""

import dagster as dg
from pydantic import Field

from astroclip_core.storage import StorageLayout
from astroclip_core.training.config import TrainConfig
from astroclip_core.training.steps import embed_partition, model_name, train_release
from pipelines.metadata import materialize
from pipelines.partitions import (
    from_release,
    release_and_pixel,
    releases_partitions,
    sky_partitions,
)
from pipelines.resources import StorageResource

# Read for its defaults only: every default below is the library's.
_TRAIN = TrainConfig(out_dir="", files=())


class TrainingConfig(dg.Config):
    """What to train and for how long (see astroclip_core.model.config for the presets).

    The defaults are :class:`~astroclip_core.training.config.TrainConfig`'s.
    """

    preset: str = Field(default=str(_TRAIN.model), description="Model preset: tiny, base or paper.")
    run: str = Field(default="v1", description="Run name; the model is '<preset>-<run>'.")
    steps: int = Field(default=_TRAIN.steps, description="Optimiser steps.")
    batch_size: int = Field(default=_TRAIN.batch_size, description="Pairs per step (per rank).")
    lr: float = Field(default=_TRAIN.lr, description="Peak learning rate (AdamW, warmup + cosine).")
    device: str = Field(default=_TRAIN.device, description="cpu, cuda or auto.")
    precision: str = Field(default=_TRAIN.precision, description="fp32, or bf16 autocast on GPU.")
    seed: int = Field(default=_TRAIN.seed, description="Seed (a CPU run is reproducible).")
    checkpoint_every: int = Field(
        default=_TRAIN.checkpoint_every,
        description="Steps between checkpoints (what a killed run resumes from).",
    )
    fresh: bool = Field(
        default=False,
        description="Restart this config's training from step 0 (otherwise an interrupted run "
        "of the same config resumes from its last checkpoint). The published model is replaced "
        "only when the new run finishes.",
    )

    @property
    def model_name(self) -> str:
        """The model's folder name, ``<preset>-<run>``."""
        return model_name(self.preset, self.run)

    def train_config(self, layout: StorageLayout, release: str) -> TrainConfig:
        """The library's TrainConfig of this run on ``release``'s pairs.

        Every field but ``preset``, ``run`` and ``fresh`` is a TrainConfig field of that name.
        """
        return TrainConfig(
            out_dir=layout.model_dir(release, self.model_name),
            model=self.preset,
            pairs_dir=layout.pairs_dir(release),
            **self.model_dump(exclude={"preset", "run", "fresh"}),
        )


@dg.asset(
    partitions_def=releases_partitions,
    deps=[dg.AssetDep("hf_dataset")],
    group_name="training",
    kinds={"pytorch"},
    description="Trains the CLIP-style image-spectrum model on the release's train split; "
    "writes model.pt, config.json, history.parquet and a loss curve under models/<release>/.",
)
def contrastive_model(
    context: dg.AssetExecutionContext, config: TrainingConfig, storage: StorageResource
) -> dg.MaterializeResult:
    layout, release = storage.layout(), context.partition_key
    result = train_release(
        layout, release, config.model_name, config.train_config(layout, release), config.fresh
    )
    md = result.metadata
    context.log.info(f"trained {md['model']}: {md['steps']} steps, {md['pairs_per_s']:.0f} pairs/s")
    return materialize(result)


@dg.asset(
    partitions_def=sky_partitions,
    deps=[dg.AssetDep(contrastive_model, partition_mapping=from_release), dg.AssetDep("pairs")],
    group_name="training",
    kinds={"parquet"},
    description="Image and spectrum embeddings of every pair of the partition, with the "
    "release's current model (StorageLayout.embeddings_file under embeddings/<release>/<model>/).",
)
def embeddings(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    release, pixel = release_and_pixel(context)
    result = embed_partition(storage.layout(), release, pixel)
    context.log.info(f"wrote {result.rows} embeddings to {result.path}")
    return materialize(result)
