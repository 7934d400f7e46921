"""contrastive_model through Dagster Pipes, on CPU with a real (ephemeral) Dagster instance.

- 2 gloo processes: rank 0's steps and losses reach the run's log and the asset's metadata,
  and the model is published; when the launched training processes are killed mid-training,
  no worker outlives its launcher, nothing is published, and the re-run resumes from the last
  checkpoint.
- 1 process trains the same weights as the library's in-process ``train_release``, also when
  launched the way a remote node is (a ``launch_prefix`` and a shared ``pipes_dir``).
- The training entry module never imports dagster.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import psutil
import pyarrow.parquet as pq
import pytest
import torch
from pairs_fixture import micro_model_config, write_pairs_dir

from astroclip_core.storage import StorageLayout
from astroclip_core.training.checkpoint import load_model
from astroclip_core.training.config import TrainResult
from astroclip_core.training.steps import current_model, train_release
from pipelines import training
from pipelines.resources import StorageResource
from pipelines.train_process import PROGRESS, RESULT, read_reports

RELEASE = "edr"
MODEL = "micro-v1"  # <preset file name>-<run>
STEPS, EVERY = 60, 10  # the run logs every 10 steps (TrainConfig's default); checkpoints too


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    """A data root with a release's pairs, and a micro model config file next to it."""
    root = tmp_path / "storage"
    write_pairs_dir(Path(StorageLayout(str(root)).pairs_dir(RELEASE)), 24, pixels=(41, 42))
    (tmp_path / "micro.json").write_text(json.dumps(micro_model_config().to_dict()))
    return root


def _config(root: Path, **overrides) -> dict:
    return {
        "preset": str(root.parent / "micro.json"),
        "steps": STEPS,
        "batch_size": 4,
        "checkpoint_every": EVERY,
        "device": "cpu",
        **overrides,
    }


def _materialize(instance: dg.DagsterInstance, root: Path, config: dict):
    if not instance.has_dynamic_partition("releases", RELEASE):
        instance.add_dynamic_partitions("releases", [RELEASE])
    return dg.materialize(
        [training.contrastive_model],
        partition_key=RELEASE,
        instance=instance,
        resources={"storage": StorageResource(root=str(root))},
        run_config={"ops": {"contrastive_model": {"config": config}}},
        raise_on_error=False,
    )


def _log_messages(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(entry.user_message for entry in instance.all_logs(run_id))


def _kill_launcher_at_first_checkpoint(runs_dir: Path, done: threading.Event, killed: dict):
    """SIGKILL the launched training command once a checkpoint exists; note its workers."""
    while not done.is_set() and not list(runs_dir.glob("*/checkpoint.pt")):
        time.sleep(0.005)
    for child in psutil.Process().children():
        if "pipelines.train_process" in " ".join(child.cmdline()):
            killed["workers"] = child.children(recursive=True)
            child.kill()
            killed["launcher"] = child
            return


def test_two_processes_report_through_pipes_publish_and_resume_after_a_kill(storage: Path):
    layout = StorageLayout(str(storage))
    killed: dict = {}
    runs_dir = Path(layout.model_runs_dir(RELEASE, MODEL))
    done = threading.Event()
    killer = threading.Thread(
        target=_kill_launcher_at_first_checkpoint, args=(runs_dir, done, killed)
    )
    with dg.DagsterInstance.ephemeral() as instance:
        killer.start()
        try:
            first = _materialize(instance, storage, _config(storage, nproc=2))
        finally:
            done.set()
            killer.join()
        assert "launcher" in killed, "the training command was never found to kill"
        assert not first.success, "training finished before the kill; make it longer"
        assert len(killed["workers"]) >= 2  # torchrun's 2 ranks
        _, alive = psutil.wait_procs(killed["workers"], timeout=10)
        assert alive == [], f"workers outlived their killed launcher: {alive}"
        assert f"step {EVERY}/{STEPS} loss" in _log_messages(instance, first.run_id)
        assert not Path(layout.model_dir(RELEASE, MODEL)).exists()
        assert list(runs_dir.glob("*/checkpoint.pt")), "the kill lost the checkpoint"

        second = _materialize(instance, storage, _config(storage, nproc=2))
        assert second.success
        logs = _log_messages(instance, second.run_id)
        md = second.asset_materializations_for_node("contrastive_model")[0].metadata

    resumed = md["resumed_from_step"].value
    assert 0 < resumed < STEPS and resumed % EVERY == 0
    assert md["steps"].value == STEPS and md["world_size"].value == 2
    assert md["global_batch_size"].value == 8
    assert md["reported_steps"].value == (STEPS - resumed) // EVERY
    assert f"| {STEPS} |" in md["progress"].value
    assert "global batch 8 (4 per rank x 2 ranks)" in logs
    assert "resumed from" in logs and f"step {STEPS}/{STEPS} loss" in logs
    ref = current_model(layout, RELEASE)
    assert ref.name == MODEL and Path(ref.model_path).is_file()
    assert load_model(ref.model_path).config == micro_model_config()
    history = pq.read_table(Path(ref.model_path).with_name("history.parquet"))
    assert history.column("step").to_pylist() == list(range(EVERY, STEPS + 1, EVERY))
    assert not runs_dir.exists()  # the work folder became the published model


def test_one_process_trains_the_weights_of_in_process_training(storage: Path, tmp_path: Path):
    launch = {
        "launch_prefix": ["env", "OMP_NUM_THREADS=1"],  # as srun would prefix; one thread
        "pipes_dir": str(tmp_path / "pipes"),
    }
    config = _config(storage, steps=20, checkpoint_every=10)
    with dg.DagsterInstance.ephemeral() as instance:
        result = _materialize(instance, storage, {**config, **launch})
        assert result.success
        md = result.asset_materializations_for_node("contrastive_model")[0].metadata
        assert md["reported_steps"].value == 2 and md["world_size"].value == 1
        assert (tmp_path / "pipes" / result.run_id).is_dir()

    other = StorageLayout(str(tmp_path / "in_process"))
    write_pairs_dir(Path(other.pairs_dir(RELEASE)), 24, pixels=(41, 42))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        options = training.TrainingConfig(**config)
        local = train_release(other, RELEASE, MODEL, options.train_config(other, RELEASE))
    finally:
        torch.set_num_threads(threads)
    assert local.metadata["final_loss"] == md["final_loss"].value
    piped = load_model(current_model(StorageLayout(str(storage)), RELEASE).model_path)
    a, b = piped.state_dict(), load_model(local.outputs["checkpoint"]).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_training_entry_never_imports_dagster():
    code = (
        "import sys, pipelines.train_process; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert proc.stdout.strip() == "[]"


def test_reports_are_read_back_and_a_missing_result_is_an_error():
    result = TrainResult(
        *(3, 1.5, 10.0, 1, 2, 3, 6, "cpu", 2, 8, 0),
        paths={"model": "m.pt"},
        rank_weight_checksums=(1.0, 1.0),
    )
    progress = {"step": 3, "loss": 1.5}
    reports = read_reports([{PROGRESS: progress}, "other", {RESULT: result.to_dict()}])
    assert reports.progress == (progress,) and reports.result == result
    with pytest.raises(RuntimeError, match="no result"):
        read_reports([{PROGRESS: progress}])
