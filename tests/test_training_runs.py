"""Training runs replace the published model only on success, and resume when killed."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
import torch
from pairs_fixture import micro_model_config, write_pairs_dir

from astroclip_core import fsio
from astroclip_core.model.config import ModelConfig
from astroclip_core.storage import StorageLayout
from astroclip_core.training.checkpoint import load_model
from astroclip_core.training.config import TrainConfig
from astroclip_core.training.runs import plan_run, recover_model
from astroclip_core.training.steps import train_release

RELEASE, NAME = "edr", "micro-v1"


@pytest.fixture()
def layout(tmp_path: Path) -> StorageLayout:
    layout = StorageLayout(str(tmp_path / "data"))
    write_pairs_dir(Path(layout.pairs_dir(RELEASE)), 32, pixels=(21, 22))
    return layout


def _config(layout: StorageLayout, **kw) -> TrainConfig:
    base = dict(
        out_dir=layout.model_dir(RELEASE, NAME),
        model=micro_model_config(),
        pairs_dir=layout.pairs_dir(RELEASE),
        steps=6,
        batch_size=8,
        warmup_steps=2,
        log_every=1,
        checkpoint_every=2,
        num_threads=1,
        device="cpu",
        seed=0,
    )
    base.update(kw)
    return TrainConfig(**base)


def _digest(url: str) -> str:
    return hashlib.sha256(fsio.read_bytes(url)).hexdigest()


def _files(root: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file())


def test_a_stopped_run_keeps_the_current_model_and_resumes(layout: StorageLayout) -> None:
    first = train_release(layout, RELEASE, NAME, _config(layout))
    model_url = first.outputs["checkpoint"]
    current = fsio.read_bytes(layout.current_model(RELEASE))
    before = _digest(model_url)

    # Another config, stopped after its step-2 checkpoint as if killed there.
    with pytest.raises(RuntimeError, match="stopped at step 2 of 6; the current model is kept"):
        train_release(layout, RELEASE, NAME, _config(layout, seed=1, stop_after_steps=2))
    assert _digest(model_url) == before
    assert fsio.read_bytes(layout.current_model(RELEASE)) == current

    resumed = train_release(layout, RELEASE, NAME, _config(layout, seed=1))
    assert resumed.metadata["resumed_from_step"] == 2 and resumed.metadata["steps"] == 6
    assert _digest(model_url) != before
    pointer = json.loads(fsio.read_bytes(layout.current_model(RELEASE)))
    assert pointer["model_path"] == model_url and pointer["run_key"] == resumed.metadata["run_key"]
    # The published folder holds the model files only; no work folder or temp file remains.
    models = str(Path(layout.model_dir(RELEASE, NAME)).parent)
    assert _files(models) == [
        "current.json",
        f"{NAME}/README.md",
        f"{NAME}/config.json",
        f"{NAME}/history.parquet",
        f"{NAME}/loss_curve.png",
        f"{NAME}/model.safetensors",
    ]
    saved = json.loads(fsio.read_bytes(f"{layout.model_dir(RELEASE, NAME)}/config.json"))
    training = saved["training"]
    assert training["out_dir"] == layout.model_dir(RELEASE, NAME) and training["seed"] == 1
    assert saved["steps"] == 6
    assert ModelConfig.from_dict(saved["model_config"]) == micro_model_config()


def test_resumed_model_equals_an_uninterrupted_one(layout: StorageLayout, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="stopped at step 4"):
        train_release(layout, RELEASE, NAME, _config(layout, stop_after_steps=4))
    resumed = load_model(
        train_release(layout, RELEASE, NAME, _config(layout)).outputs["checkpoint"]
    )

    other = StorageLayout(str(tmp_path / "other"))
    write_pairs_dir(Path(other.pairs_dir(RELEASE)), 32, pixels=(21, 22))
    straight = load_model(train_release(other, RELEASE, NAME, _config(other)).outputs["checkpoint"])
    a, b = resumed.state_dict(), straight.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_changed_config_starts_a_new_run_and_says_so(
    layout: StorageLayout, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(RuntimeError):
        train_release(layout, RELEASE, NAME, _config(layout, stop_after_steps=2))
    interrupted = plan_run(layout, RELEASE, NAME, _config(layout), fresh=False)
    assert interrupted.resume_step == 2
    with caplog.at_level(logging.INFO, logger="astroclip_core.training.steps"):
        result = train_release(layout, RELEASE, NAME, _config(layout, lr=1e-3))
    assert result.metadata["resumed_from_step"] == 0
    assert any("config changed" in r.getMessage() for r in caplog.records), caplog.text


def test_fresh_restarts_from_step_zero(layout: StorageLayout) -> None:
    with pytest.raises(RuntimeError):
        train_release(layout, RELEASE, NAME, _config(layout, stop_after_steps=2))
    result = train_release(layout, RELEASE, NAME, _config(layout), fresh=True)
    assert result.metadata["resumed_from_step"] == 0 and result.metadata["steps"] == 6


def test_a_crash_inside_the_swap_is_undone(layout: StorageLayout) -> None:
    result = train_release(layout, RELEASE, NAME, _config(layout))
    published = Path(layout.model_dir(RELEASE, NAME))
    digest = _digest(result.outputs["checkpoint"])
    # The state a kill between the swap's two renames leaves: the old model set aside.
    replaced = Path(layout.model_replaced_dir(RELEASE, NAME))
    replaced.parent.mkdir(parents=True)
    published.rename(replaced)
    assert recover_model(layout, RELEASE, NAME) is True
    assert _digest(result.outputs["checkpoint"]) == digest and not replaced.exists()


def test_bad_training_settings_are_refused(layout: StorageLayout) -> None:
    for kw, message in (
        ({"steps": 0}, "steps must be in 1..10000000, got 0"),
        ({"steps": 10**20}, "steps must be in 1.."),
        ({"seed": -1}, "seed must be in 0..4294967295, got -1"),
        ({"model": "nosuch"}, "unknown model preset 'nosuch'"),
    ):
        with pytest.raises(ValueError, match=message):
            _config(layout, **kw)
