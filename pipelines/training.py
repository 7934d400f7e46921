"""Stage 4: the contrastive model of a release and the embeddings of every partition."""

import dagster as dg
from pydantic import Field

from astroclip_core import fsio
from astroclip_core.training.steps import embed_partition, train_release
from pipelines.defaults import DEFAULT_TRAIN_STEPS
from pipelines.metadata import png_md
from pipelines.partitions import (
    from_release,
    release_and_pixel,
    releases_partitions,
    sky_partitions,
)
from pipelines.resources import StorageResource


class TrainingConfig(dg.Config):
    """What to train and for how long (see astroclip_core.model.config for the presets)."""

    preset: str = Field(default="tiny", description="Model preset: tiny, base or paper.")
    run: str = Field(default="v1", description="Run name; the model is '<preset>-<run>'.")
    steps: int = Field(default=DEFAULT_TRAIN_STEPS, description="Optimiser steps.")
    batch_size: int = Field(default=64, description="Pairs per step (per rank).")
    lr: float = Field(default=5e-4, description="Peak learning rate (AdamW, warmup + cosine).")
    device: str = Field(default="auto", description="cpu, cuda or auto.")
    precision: str = Field(default="fp32", description="fp32, or bf16 autocast on GPU.")
    seed: int = Field(default=0, description="Seed (a CPU run is reproducible).")
    fresh: bool = Field(
        default=False,
        description="Delete a previous run of the same name first "
        "(otherwise an interrupted run resumes from its checkpoint).",
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
    result, ref = train_release(
        storage.layout(),
        context.partition_key,
        config.preset,
        config.run,
        config.fresh,
        steps=config.steps,
        batch_size=config.batch_size,
        lr=config.lr,
        device=config.device,
        precision=config.precision,
        seed=config.seed,
    )
    context.log.info(f"trained {ref.name}: {result.steps} steps, {result.pairs_per_s:.0f} pairs/s")
    return dg.MaterializeResult(
        metadata={
            "model": ref.name,
            "checkpoint": dg.MetadataValue.path(ref.model_path),
            "loss_curve": png_md(fsio.read_bytes(result.paths["loss_curve"]), "loss curve"),
            "final_loss": result.final_loss,
            "steps": result.steps,
            "pairs_per_s": result.pairs_per_s,
            "device": result.device,
            "params_image": result.n_params_image,
            "params_spectrum": result.n_params_spectrum,
            "params_heads": result.n_params_heads,
            "params_total": result.n_params_total,
        }
    )


@dg.asset(
    partitions_def=sky_partitions,
    deps=[dg.AssetDep(contrastive_model, partition_mapping=from_release), dg.AssetDep("pairs")],
    group_name="training",
    kinds={"parquet"},
    description="Image and spectrum embeddings of every pair of the partition, with the "
    "release's current model (embeddings/<release>/<model>/healpix=<pix>/part-0.parquet).",
)
def embeddings(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    release, pixel = release_and_pixel(context)
    url, rows, size = embed_partition(storage.layout(), release, pixel)
    context.log.info(f"wrote {rows} embeddings to {url}")
    return dg.MaterializeResult(
        metadata={"path": dg.MetadataValue.path(url), "rows": rows, "size_bytes": size}
    )
