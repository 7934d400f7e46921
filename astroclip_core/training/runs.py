"""Training runs that never destroy the model they replace, and that resume when killed.

A release's published model lives in ``models/<release>/<model>/`` (``<model>`` =
``<preset>-<run>``); its embeddings and report are computed from it. A new training run never
writes there. It writes into its own work folder, ``models/<release>/.runs/<model>/<key>/``,
where ``<key>`` is a digest of everything that decides the result (:func:`run_key`): the
training config (less where it is written, how many threads it uses and test hooks) and the
training data's files and sizes. So:

- the same command after a kill finds the same folder and resumes from its checkpoint;
- a changed config (or changed data) gets another key and starts a new run; the interrupted
  run of another key is removed, and the caller is told (:class:`RunPlan`);
- ``fresh`` removes the work folder of this key first.

Only when training has reached its last step is the work folder moved into place
(:func:`publish_run`), replacing the previous model in one rename on a local data root; the
previous model stays whole and current until then. A crash between the two renames of that
swap leaves the previous model in ``.runs/<model>/replaced``, from where :func:`recover_model`
puts it back before anything else runs.

One training run per model name at a time is the supported case: two concurrent runs of
different configs under one name would each drop the other's work folder as stale. On an object store (``s3://``) each file of the new
model is put over the old one, model weights last.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from dataclasses import dataclass

from astroclip_core import fsio
from astroclip_core.storage import StorageLayout
from astroclip_core.training.config import TrainConfig

log = logging.getLogger(__name__)

# TrainConfig fields that do not change what a run computes, so they stay out of its key.
_KEY_EXCLUDED = (
    "out_dir",
    "resume",
    "stop_after_steps",
    "num_threads",
    "device",
    "prefetch_batches",
)
# The files a finished run publishes; the checkpoint stays behind and is removed with the work
# folder. The weights go last, so that on an object store a reader that finds the new weights
# also finds the new config, card and history. README.md is the model card
# (astroclip_core.publish.model_card), written into the work folder just before publishing.
PUBLISHED_FILES = (
    "config.json",
    "history.parquet",
    "loss_curve.png",
    "README.md",
    "model.safetensors",
)
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass(frozen=True)
class RunPlan:
    """Where a training run writes and what it continues from.

    ``work_dir`` is the run's own folder; ``resume_step`` the step of the checkpoint found
    there (0 when it starts from scratch); ``discarded`` the work folders of interrupted runs
    with another config that were removed to make room.
    """

    model_name: str
    key: str
    work_dir: str
    published_dir: str
    resume_step: int
    discarded: tuple[str, ...]


def data_fingerprint(files: list[str]) -> list[tuple[str, int]]:
    """(file name relative to its release, size in bytes) of every training file, sorted."""
    out = []
    for url in files:
        fs, path = fsio.filesystem(url)
        # The last three parts (pairs/<release>/<partition folder>/part-0.parquet without the
        # root) identify the file wherever the data root is mounted.
        out.append(("/".join(path.rstrip("/").split("/")[-2:]), int(fs.size(path))))
    return sorted(out)


def run_key(config: TrainConfig, fingerprint: list[tuple[str, int]], world_size: int = 1) -> str:
    """A 12-hex-digit digest of ``config`` (less :data:`_KEY_EXCLUDED`), the data and the number
    of processes (which sets the global batch and each rank's shard)."""
    settings = {k: v for k, v in config.to_dict().items() if k not in _KEY_EXCLUDED}
    settings["world_size"] = world_size
    for name in ("pairs_dir", "hf_dir", "files"):
        settings.pop(name, None)  # the data enters through its fingerprint
    blob = json.dumps({"config": settings, "data": fingerprint}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _rm(url: str) -> None:
    fs, path = fsio.filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _checkpoint_step(work_dir: str) -> int:
    # Read lazily: torch is only needed when a checkpoint exists.
    from astroclip_core.training.checkpoint import load_checkpoint

    try:
        state = load_checkpoint(f"{work_dir}/{CHECKPOINT_FILE}")
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as err:
        # A torn or foreign checkpoint cannot be resumed: say so and start this run over.
        log.warning("checkpoint in %s is unreadable (%s); starting this run over", work_dir, err)
        _rm(work_dir)
        return 0
    return 0 if state is None else state.step


def recover_model(layout: StorageLayout, release: str, model_name: str) -> bool:
    """Put back a model left in ``replaced`` by a swap that crashed; True when it did."""
    published = layout.model_dir(release, model_name)
    replaced = layout.model_replaced_dir(release, model_name)
    if not fsio.exists(replaced):
        return False
    fs, replaced_path = fsio.filesystem(replaced)
    if fsio.exists(published):
        # The swap finished its second rename; only the old copy was left.
        fs.rm(replaced_path, recursive=True)
        return False
    fs.mv(replaced_path, fsio.filesystem(published)[1], recursive=True)
    log.warning("restored %s from an interrupted model replacement", published)
    return True


def plan_run(
    layout: StorageLayout,
    release: str,
    model_name: str,
    config: TrainConfig,
    fresh: bool,
    world_size: int = 1,
) -> RunPlan:
    """Choose the work folder of a run of ``config`` on ``world_size`` processes and clear what
    must not be resumed.

    ``config.out_dir`` is ignored (the plan decides it). With ``fresh`` the work folder of this
    key is removed, so the run starts at step 0. Work folders of other keys are removed and
    listed in ``discarded``.
    """
    from astroclip_core.training.data import source_files  # reads the pairs/shards layout

    recover_model(layout, release, model_name)
    key = run_key(config, data_fingerprint(source_files(config)), world_size)
    runs_dir = layout.model_runs_dir(release, model_name)
    work_dir = layout.model_run_dir(release, model_name, key)
    discarded = []
    fs, runs_path = fsio.filesystem(runs_dir)
    if fs.exists(runs_path):
        for entry in sorted(fs.ls(runs_path, detail=False)):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name in (key, "replaced"):
                continue
            fs.rm(entry, recursive=True)
            discarded.append(f"{runs_dir}/{name}")
    if fresh:
        _rm(work_dir)
    resume_step = _checkpoint_step(work_dir) if fsio.exists(work_dir) else 0
    return RunPlan(
        model_name=model_name,
        key=key,
        work_dir=work_dir,
        published_dir=layout.model_dir(release, model_name),
        resume_step=resume_step,
        discarded=tuple(discarded),
    )


def publish_run(layout: StorageLayout, release: str, plan: RunPlan) -> str:
    """Move a finished run's files into the published folder; return the model file's URL.

    Raises ``FileNotFoundError`` naming the file when the run did not write all of
    :data:`PUBLISHED_FILES` (nothing is replaced then).
    """
    missing = [n for n in PUBLISHED_FILES if not fsio.exists(f"{plan.work_dir}/{n}")]
    if missing:
        raise FileNotFoundError(
            f"training run in {plan.work_dir} did not write {missing}; the current model is kept"
        )
    _rm(f"{plan.work_dir}/{CHECKPOINT_FILE}")
    published = plan.published_dir
    fs, work_path = fsio.filesystem(plan.work_dir)
    if fsio.is_local(published):
        replaced = layout.model_replaced_dir(release, plan.model_name)
        _rm(replaced)
        pub_path = fsio.filesystem(published)[1]
        if fs.exists(pub_path):
            fs.mv(pub_path, fsio.filesystem(replaced)[1], recursive=True)
        fs.makedirs(pub_path.rsplit("/", 1)[0], exist_ok=True)
        fs.mv(work_path, pub_path, recursive=True)
        _rm(replaced)
    else:
        for name in PUBLISHED_FILES:
            fsio.atomic_write_bytes(
                f"{published}/{name}", fsio.read_bytes(f"{plan.work_dir}/{name}")
            )
        fs.rm(work_path, recursive=True)
    # The last run of this model (and of the release) leaves no empty work folders behind.
    runs_path = fsio.filesystem(layout.model_runs_dir(release, plan.model_name))[1]
    for folder in (runs_path, runs_path.rsplit("/", 1)[0]):
        if fs.exists(folder) and not fs.ls(folder, detail=False):
            fs.rm(folder, recursive=True)
    # The config was written with the work folder as out_dir; record where the model now is.
    config = json.loads(fsio.read_bytes(f"{published}/config.json"))
    config["training"]["out_dir"] = published
    fsio.atomic_write_bytes(f"{published}/config.json", json.dumps(config, indent=2).encode())
    return f"{published}/{PUBLISHED_FILES[-1]}"
