"""DDP under torchrun: 2 CPU processes (gloo) train in lockstep and end with equal weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from pairs_fixture import micro_model_config, write_pairs_dir

from astroclip_core.training.checkpoint import load_model
from astroclip_core.training.config import TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_two_process_ddp_keeps_ranks_in_sync(tmp_path) -> None:
    pairs = tmp_path / "pairs"
    write_pairs_dir(pairs, 40, pixels=(41, 42))
    config = TrainConfig(
        out_dir=str(tmp_path / "run"),
        model=micro_model_config(),
        pairs_dir=str(pairs),
        steps=4,
        batch_size=4,
        warmup_steps=1,
        log_every=1,
        checkpoint_every=2,
        num_threads=1,
        device="cpu",
    )
    config_path = tmp_path / "config.json"
    config_path.write_text(config.to_json())
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "astroclip_core.training.train", str(config_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 2
    assert "global batch 8 (4 per rank x 2 ranks)" in proc.stderr  # rank 0 logs it once
    for report in reports:
        assert report["world_size"] == 2 and report["steps"] == 4
        assert report["global_batch_size"] == 8
        checksums = report["rank_weight_checksums"]
        assert len(checksums) == 2 and checksums[0] == checksums[1]
    model = load_model(str(tmp_path / "run" / "model.safetensors"))
    saved = sum(float(p.detach().double().square().sum()) for p in model.parameters())
    assert abs(saved - reports[0]["rank_weight_checksums"][0]) < 1e-9 * max(saved, 1.0)
    assert pq.read_table(tmp_path / "run" / "history.parquet").column("step").to_pylist() == [
        1,
        2,
        3,
        4,
    ]
