"""Stage 4: the contrastive model of a release and the embeddings of every partition.

Training runs outside the step process: ``contrastive_model`` plans the run (its work folder,
and whether it resumes), launches :mod:`pipelines.train_process` through Dagster Pipes with
``nproc`` processes, and publishes the model only when they succeeded. It does so for one
process too, so every run reports the same way, its memory is freed when it ends, and
``launch_prefix`` / ``pipes_dir`` can send any run to another machine (README: Scaling). One
process trains exactly as the library's ``train_release`` does in-process: same config, same
seed, same weights on CPU (``tests/test_pipeline_training_pipes.py``).
"""

import os
import sys
from collections.abc import Sequence

import dagster as dg
from pydantic import Field

from astroclip_core.model.config import preset_label, preset_or_file
from astroclip_core.publish.model_hub import model_hub_settings_from_env, push_release_model
from astroclip_core.storage import StorageLayout
from astroclip_core.training.config import TrainConfig
from astroclip_core.training.steps import (
    embed_partition,
    model_name,
    plan_training,
    publish_training,
)
from pipelines.metadata import materialize, table_md
from pipelines.partitions import (
    from_release,
    release_and_pixel,
    releases_partitions,
    sky_partitions,
)
from pipelines.resources import StorageResource
from pipelines.train_process import EXTRA_CONFIG, PARENT_PID_ENV, read_reports

# Read for its defaults only: every default below is the library's.
_TRAIN = TrainConfig(out_dir="", files=())
# TrainingConfig fields that say how and where to launch, not what to train.
_LAUNCH_FIELDS = {"nproc", "launch_prefix", "pipes_dir"}
# The asset's metadata shows the last progress reports (all of them are in history.parquet).
_PROGRESS_ROWS = 20


class TrainingConfig(dg.Config):
    """What to train and for how long (see astroclip_core.model.config for the presets).

    The defaults are :class:`~astroclip_core.training.config.TrainConfig`'s.
    """

    preset: str = Field(
        default=str(_TRAIN.model),
        description="Model preset (tiny, base or paper), or a ModelConfig JSON file (*.json; "
        "the model is then named after the file).",
    )
    run: str = Field(default="v1", description="Run name; the model is '<preset>-<run>'.")
    steps: int = Field(default=_TRAIN.steps, description="Optimiser steps.")
    batch_size: int = Field(default=_TRAIN.batch_size, description="Pairs per step (per rank).")
    lr: float = Field(default=_TRAIN.lr, description="Peak learning rate (AdamW, warmup + cosine).")
    device: str = Field(default=_TRAIN.device, description="cpu, cuda or auto.")
    precision: str = Field(
        default=_TRAIN.precision,
        description="auto (bf16 autocast where the GPU or CPU has native bf16, else fp32), fp32 "
        "or bf16.",
    )
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
    source: str = Field(
        default="pairs",
        description="Training data: 'pairs' (the pairs table) or 'hf' (the published Hugging "
        "Face dataset's train shards).",
    )
    shuffle_unit: str = Field(
        default=_TRAIN.shuffle_unit,
        description="'file' (whole files into the shuffle window) or 'row_group' (a streaming "
        "shuffle over row groups of several files; memory independent of file size).",
    )
    nproc: int = Field(
        default=1,
        description="Training processes on the node, one per GPU; above 1 they train together "
        "under torchrun (DDP, gloo on CPU). batch_size is per process.",
    )
    launch_prefix: list[str] = Field(
        default=[],
        description="Command words put before the training command, e.g. ['srun', '--gpus=4'] "
        "to train on a SLURM node (the venv and data root must be reachable there).",
    )
    pipes_dir: str = Field(
        default="",
        description="A folder the training node also sees, for the Pipes context and messages "
        "(with launch_prefix); empty = this machine's temporary files.",
    )

    @property
    def model_name(self) -> str:
        """The model's folder name, ``<preset>-<run>`` (a config file's name for ``<preset>``)."""
        return model_name(preset_label(self.preset), self.run)

    def train_config(self, layout: StorageLayout, release: str) -> TrainConfig:
        """The library's TrainConfig of this run on ``release``'s pairs.

        Every field but ``preset``, ``run``, ``fresh``, ``source`` and the launch fields is a
        TrainConfig field of that name.
        """
        if self.source not in ("pairs", "hf"):
            raise ValueError(f"source must be 'pairs' or 'hf', got {self.source!r}")
        data = (
            {"hf_dir": layout.hf_dir(release)}
            if self.source == "hf"
            else {"pairs_dir": layout.pairs_dir(release)}
        )
        return TrainConfig(
            out_dir=layout.model_dir(release, self.model_name),
            model=preset_or_file(self.preset),
            **data,
            **self.model_dump(exclude={"preset", "run", "fresh", "source", *_LAUNCH_FIELDS}),
        )

    def command(self) -> list[str]:
        """What the Pipes client runs: ``launch_prefix``, then this interpreter on
        :mod:`pipelines.train_process` with ``nproc`` processes."""
        if self.nproc < 1:
            raise ValueError(f"nproc must be >= 1, got {self.nproc}")
        return [
            *self.launch_prefix,
            *(sys.executable, "-m", "pipelines.train_process", f"--nproc-per-node={self.nproc}"),
        ]

    def pipes_client(self, run_id: str) -> dg.PipesSubprocessClient:
        """The Pipes client of a run: local temporary files, or ``<pipes_dir>/<run_id>/``.

        Launched here (no ``launch_prefix``), the training processes die with this step
        process (``pipelines.train_process``: dying with the step).
        """
        env = {} if self.launch_prefix else {PARENT_PID_ENV: str(os.getpid())}
        if not self.pipes_dir:
            return dg.PipesSubprocessClient(env=env)
        folder = f"{self.pipes_dir.rstrip('/')}/{run_id}"
        os.makedirs(folder, exist_ok=True)
        return dg.PipesSubprocessClient(
            env=env,
            context_injector=dg.PipesFileContextInjector(f"{folder}/context.json"),
            message_reader=dg.PipesFileMessageReader(f"{folder}/messages.jsonl"),
        )


def progress_metadata(progress: Sequence[dict]) -> dict[str, dg.MetadataValue | int]:
    """The training's progress reports as metadata: their count and the last few as a table."""
    rows = [
        (r["step"], f"{r['loss']:.4f}", f"{r['accuracy']:.3f}", f"{r['pairs_per_s']:.1f}")
        for r in progress[-_PROGRESS_ROWS:]
    ]
    return {
        "reported_steps": len(progress),
        "progress": table_md(("step", "loss", "accuracy", "pairs/s"), rows),
    }


@dg.asset(
    partitions_def=releases_partitions,
    deps=[dg.AssetDep("hf_dataset")],
    group_name="training",
    kinds={"pytorch"},
    description="Trains the CLIP-style image-spectrum model on the release's train split in "
    "nproc processes launched through Dagster Pipes; writes model.safetensors, config.json, "
    "a model card (README.md), history.parquet and a loss curve under models/<release>/, and "
    "pushes that folder to the Hub model repo HF_MODEL_REPO_ID when it and HF_TOKEN are set.",
)
def contrastive_model(
    context: dg.AssetExecutionContext, config: TrainingConfig, storage: StorageResource
) -> dg.MaterializeResult:
    layout, release = storage.layout(), context.partition_key
    train_config, command = config.train_config(layout, release), config.command()
    job = plan_training(
        layout, release, config.model_name, train_config, config.fresh, config.nproc
    )
    invocation = config.pipes_client(context.run.run_id).run(
        context=context, command=command, extras={EXTRA_CONFIG: job.config.to_dict()}
    )
    reports = read_reports(invocation.get_custom_messages())
    result = publish_training(layout, release, job, reports.result)
    md = result.metadata
    context.log.info(f"trained {md['model']}: {md['steps']} steps, {md['pairs_per_s']:.0f} pairs/s")
    # The token is read here, at the edge, and goes only to the Hub client.
    push, push_md = push_release_model(
        layout, release, config.model_name, model_hub_settings_from_env()
    )
    context.log.info(f"model push: {push.reason} {push.repo_id or ''} {push.commit_url or ''}")
    return materialize(result, extra={**progress_metadata(reports.progress), **push_md})


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
