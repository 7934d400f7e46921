"""Release-level training steps the orchestration calls: train, point at the model, embed."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace

import numpy as np

from astroclip_core import fsio
from astroclip_core.results import Figure, StepResult
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.embeddings import embeddings_table, write_embeddings
from astroclip_core.tables.pairs import read_pairs
from astroclip_core.training.checkpoint import load_model
from astroclip_core.training.config import TrainConfig, TrainResult
from astroclip_core.training.embed import embed_pairs
from astroclip_core.training.runs import RunPlan, plan_run, publish_run
from astroclip_core.training.train import main as train_main

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    """Which trained model a release's embeddings and evaluation use."""

    release: str
    name: str  # "<preset>-<run>"
    model_path: str


def model_name(preset: str, run: str) -> str:
    """The name of a release's model folder: ``<preset>-<run>``."""
    return f"{preset}-{run}"


@dataclass(frozen=True)
class TrainingJob:
    """A planned training run: where it writes, and the config its processes train with.

    ``config`` is the caller's with ``out_dir`` set to the plan's work folder and
    ``resume=True``; ``world_size`` the number of processes it was planned for.
    """

    name: str
    plan: RunPlan
    config: TrainConfig
    world_size: int = 1


def plan_training(
    layout: StorageLayout,
    release: str,
    name: str,
    config: TrainConfig,
    fresh: bool = False,
    world_size: int = 1,
) -> TrainingJob:
    """Plan a run of ``config`` on ``world_size`` processes as ``models/<release>/<name>/``.

    ``config.out_dir`` must be that folder (``layout.model_dir(release, name)``), else
    ``ValueError``. The run itself writes into its own work folder (see
    :mod:`astroclip_core.training.runs`): the same config after a kill resumes from its last
    checkpoint, a changed config starts a new run (and says so in the log), and ``fresh``
    restarts this config's run from step 0. Nothing is trained here: train ``job.config``
    (in this process, or under ``torchrun`` with ``world_size`` processes), then call
    :func:`publish_training`.
    """
    out_dir = layout.model_dir(release, name)
    if config.out_dir != out_dir:
        raise ValueError(
            f"config.out_dir {config.out_dir!r} is not model {name!r}'s folder {out_dir!r}"
        )
    plan = plan_run(layout, release, name, config, fresh, world_size)
    for folder in plan.discarded:
        log.warning(
            "the config changed since the interrupted run in %s; starting a new run", folder
        )
    if plan.resume_step:
        log.info("resuming %s from its checkpoint at step %d", name, plan.resume_step)
    elif fresh:
        log.info("training %s from step 0 (fresh)", name)
    work_config = replace(config, out_dir=plan.work_dir, resume=True)
    return TrainingJob(name, plan, work_config, world_size)


def publish_training(
    layout: StorageLayout, release: str, job: TrainingJob, result: TrainResult
) -> StepResult:
    """Publish a finished run of ``job`` (its rank-0 ``result``) and repoint ``current.json``.

    Only a run that reached its last step replaces the published model; until then the
    previous model, its embeddings and report stay current. A run that stopped early raises
    ``RuntimeError`` naming the work folder the same command resumes from.
    """
    config, plan = job.config, job.plan
    if config.steps is not None and result.steps < config.steps:
        raise RuntimeError(
            f"training of {job.name} stopped at step {result.steps} of {config.steps}; the "
            f"current model is kept and the same command resumes from {plan.work_dir}"
        )
    from astroclip_core.publish.model_card import write_model_card  # publish is a layer above

    # The card goes with the run's files (before the evaluation exists; that step rewrites it).
    write_model_card(plan.work_dir, job.name, release)
    model_path = publish_run(layout, release, plan)
    ref = ModelRef(release, job.name, model_path)
    fsio.atomic_write_bytes(
        layout.current_model(release),
        json.dumps({"model": job.name, "model_path": ref.model_path, "run_key": plan.key}).encode(),
    )
    return StepResult(
        outputs={"checkpoint": ref.model_path},
        rows=None,
        size_bytes=None,
        metadata={
            "model": ref.name,
            "loss_curve": Figure(
                fsio.read_bytes(f"{plan.published_dir}/loss_curve.png"), "loss curve"
            ),
            "final_loss": result.final_loss,
            "steps": result.steps,
            "resumed_from_step": result.resumed_from_step,
            "run_key": plan.key,
            "pairs_per_s": result.pairs_per_s,
            "world_size": result.world_size,
            "global_batch_size": result.global_batch_size,
            "device": result.device,
            "params_image": result.n_params_image,
            "params_spectrum": result.n_params_spectrum,
            "params_heads": result.n_params_heads,
            "params_total": result.n_params_total,
        },
    )


def train_release(
    layout: StorageLayout, release: str, name: str, config: TrainConfig, fresh: bool = False
) -> StepResult:
    """Train ``config`` in this process and publish it as ``models/<release>/<name>/``.

    :func:`plan_training`, the training itself, then :func:`publish_training`; their
    docstrings say what is resumed, what raises and when the published model is replaced.
    """
    job = plan_training(layout, release, name, config, fresh)
    return publish_training(layout, release, job, train_main(job.config))


def current_model(layout: StorageLayout, release: str) -> ModelRef:
    """The model the release's ``current.json`` names (raises when none was trained)."""
    url = layout.current_model(release)
    if not fsio.exists(url):
        raise FileNotFoundError(
            f"{url} does not exist: train a model for release {release!r} first"
        )
    data = json.loads(fsio.read_bytes(url))
    return ModelRef(release, data["model"], data["model_path"])


def embed_partition(
    layout: StorageLayout, release: str, pixel: int, batch_size: int = 128, device: str = "cpu"
) -> StepResult:
    """Embed every pair of one partition with the current model; write its embeddings table."""
    ref = current_model(layout, release)
    model = load_model(ref.model_path, device=device)
    pairs = read_pairs(layout.pairs_file(release, pixel))
    image_emb, spectrum_emb = embed_pairs(model, pairs, batch_size=batch_size, device=device)
    if not (np.isfinite(image_emb).all() and np.isfinite(spectrum_emb).all()):
        raise ValueError(f"model {ref.name} produced non-finite embeddings for {release}-{pixel}")
    table = embeddings_table(pairs, image_emb, spectrum_emb, ref.name)
    url, size = write_embeddings(layout, release, ref.name, pixel, table)
    return StepResult(outputs={"path": url}, rows=table.num_rows, size_bytes=size)
