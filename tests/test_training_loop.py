"""The training entry point: outputs, reproducibility, resume after a kill, learning."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from pairs_fixture import micro_model_config, write_pairs_dir

from astroclip_core.tables.pairs import list_pairs_files, read_pairs_file
from astroclip_core.training.checkpoint import load_checkpoint, load_model
from astroclip_core.training.config import TrainConfig
from astroclip_core.training.embed import embed_pairs
from astroclip_core.training.train import main


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("pairs")
    write_pairs_dir(root, 48, pixels=(21, 22))
    return str(root)


def _config(pairs_dir: str, out_dir: Path, **kw) -> TrainConfig:
    base = dict(
        out_dir=str(out_dir),
        model=micro_model_config(),
        pairs_dir=pairs_dir,
        steps=8,
        batch_size=8,
        warmup_steps=2,
        log_every=1,
        checkpoint_every=3,
        num_threads=1,
        device="cpu",
        seed=4,
    )
    base.update(kw)
    return TrainConfig(**base)


def _weights(path: str) -> dict[str, torch.Tensor]:
    return load_model(path).state_dict()


def _same_weights(a: str, b: str) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_run_writes_its_outputs(pairs_dir, tmp_path) -> None:
    result = main(_config(pairs_dir, tmp_path / "run"))
    assert result.steps == 8 and result.resumed_from_step == 0
    assert result.world_size == 1 and result.global_batch_size == 8
    for name in ("model", "config", "history", "loss_curve", "checkpoint"):
        assert Path(result.paths[name]).stat().st_size > 0
    history = pq.read_table(result.paths["history"]).to_pydict()
    assert history["step"] == list(range(1, 9))
    assert result.final_loss == pytest.approx(history["loss"][-1])
    assert json.loads(Path(result.paths["config"]).read_text())["steps"] == 8
    assert Path(result.paths["loss_curve"]).read_bytes()[:4] == b"\x89PNG"
    assert (
        result.n_params_total
        == result.n_params_image + result.n_params_spectrum + result.n_params_heads
    )
    lrs = history["lr"]
    assert lrs[0] < lrs[1] and lrs[-1] < max(lrs)  # warmup, then cosine decay


def test_same_seed_gives_identical_runs(pairs_dir, tmp_path) -> None:
    a = main(_config(pairs_dir, tmp_path / "a", steps=5))
    b = main(_config(pairs_dir, tmp_path / "b", steps=5))
    c = main(_config(pairs_dir, tmp_path / "c", steps=5, seed=5))
    ha, hb = (pq.read_table(r.paths["history"]).column("loss").to_pylist() for r in (a, b))
    assert ha == hb
    assert _same_weights(a.paths["model"], b.paths["model"])
    assert not _same_weights(a.paths["model"], c.paths["model"])


def test_killed_run_resumes_to_the_same_end(pairs_dir, tmp_path) -> None:
    whole = main(_config(pairs_dir, tmp_path / "whole"))
    out = tmp_path / "killed"
    # "killed" after step 5: the last checkpoint is step 3; steps 4-5 are lost and redone
    partial = main(_config(pairs_dir, out, stop_after_steps=5))
    assert partial.steps == 5 and not (out / "model.safetensors").exists()
    assert load_checkpoint(str(out / "checkpoint.pt")).step == 3
    resumed = main(_config(pairs_dir, out))
    assert resumed.resumed_from_step == 3 and resumed.steps == 8
    steps = pq.read_table(resumed.paths["history"]).column("step").to_pylist()
    assert steps == list(range(1, 9))
    assert _same_weights(whole.paths["model"], resumed.paths["model"])
    h_whole = pq.read_table(whole.paths["history"]).column("loss").to_pylist()
    h_resumed = pq.read_table(resumed.paths["history"]).column("loss").to_pylist()
    assert h_whole == h_resumed


def test_resume_keeps_the_precision_the_checkpoint_was_trained_in(pairs_dir, tmp_path) -> None:
    # A run moved to a device where its precision resolves differently ('auto' on a CPU
    # without native bf16, say) finishes in the precision it started in.
    whole = main(_config(pairs_dir, tmp_path / "whole", precision="fp32"))
    out = tmp_path / "moved"
    main(_config(pairs_dir, out, precision="fp32", stop_after_steps=5))
    resumed = main(_config(pairs_dir, out, precision="bf16"))
    assert resumed.resumed_from_step == 3
    assert _same_weights(whole.paths["model"], resumed.paths["model"])
    bf16 = main(_config(pairs_dir, tmp_path / "bf16", precision="bf16"))
    assert not _same_weights(whole.paths["model"], bf16.paths["model"])


def test_resume_refuses_a_different_model(pairs_dir, tmp_path) -> None:
    main(_config(pairs_dir, tmp_path / "r", steps=3))
    other = replace(micro_model_config(), head=replace(micro_model_config().head, embed_dim=16))
    with pytest.raises(ValueError, match="different model config"):
        main(_config(pairs_dir, tmp_path / "r", steps=6, model=other))


def test_bf16_autocast_step_runs(pairs_dir, tmp_path) -> None:
    result = main(_config(pairs_dir, tmp_path / "bf16", steps=2, precision="bf16"))
    assert math.isfinite(result.final_loss)


def test_precision_auto_is_bf16_only_where_the_device_has_it() -> None:
    from astroclip_core.training.train import resolve_precision

    cpu = torch.device("cpu")
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert [resolve_precision(p, cpu) for p in ("fp32", "bf16")] == ["fp32", "bf16"]
    assert TrainConfig(out_dir="x", pairs_dir="p").precision == "auto"
    with pytest.raises(ValueError, match="'auto', 'fp32' or 'bf16'"):
        TrainConfig(out_dir="x", pairs_dir="p", precision="fp16")


def test_epochs_set_the_step_count(pairs_dir, tmp_path) -> None:
    files = list_pairs_files(str(pairs_dir))
    n_train = sum(len(read_pairs_file(url, "train")) for _, url in files)
    result = main(_config(pairs_dir, tmp_path / "ep", steps=None, epochs=1.0))
    assert result.steps == n_train // 8


def test_tiny_learns_to_align_the_synthetic_pairs(tmp_path) -> None:
    files = write_pairs_dir(tmp_path / "pairs", 256, pixels=(30,))
    config = TrainConfig(
        out_dir=str(tmp_path / "tiny"),
        model="tiny",
        files=tuple(files),
        steps=120,
        batch_size=32,
        lr=6e-4,
        warmup_steps=15,
        log_every=5,
        checkpoint_every=1000,
        num_threads=2,
        device="cpu",
    )
    result = main(config)
    # the image-spectrum InfoNCE (the total also holds the tiny preset's scan-view term)
    last = pq.read_table(result.paths["history"]).to_pylist()[-1]
    assert 0.5 * (last["loss_i2s"] + last["loss_s2i"]) < math.log(32) - 0.4
    assert result.final_loss == pytest.approx(last["loss"])
    arrays = read_pairs_file(files[0], "train")
    image_emb, spectrum_emb = embed_pairs(load_model(result.paths["model"]), arrays, batch_size=64)
    assert image_emb.dtype == np.float32 and image_emb.shape == (len(arrays), 128)
    assert np.allclose(np.linalg.norm(spectrum_emb, axis=1), 1.0, atol=1e-5)
    # image -> spectrum retrieval among the ~200 train pairs; by chance the true spectrum's
    # median rank is N/2 and top-10 recall is 10/N
    n = len(arrays)
    rank_of_true = (image_emb @ spectrum_emb.T > np.sum(image_emb * spectrum_emb, 1)[:, None]).sum(
        1
    )
    assert np.median(rank_of_true) < 0.35 * n
    assert np.mean(rank_of_true < 10) > 1.5 * 10 / n
