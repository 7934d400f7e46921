"""Benchmark: training steps per second of a preset on the CPU, fp32 against bf16 autocast.

What one step of ``astroclip_core.training.train`` costs on CPU cores, without the loader: a
few batches are decoded up front (from ``--pairs-dir``, a pairs table's release folder such as
``storage/pairs/edr``, or synthetic pairs when it is not given) and every timed step runs
``train_inputs`` (the augmentation, on the main thread as in training) and ``train_step``
(forward, loss, backward, clipping, AdamW, the schedule) of a model built from the preset with
the repo's optimiser. Each ``--precisions`` entry (``fp32``, ``bf16`` or ``auto``, resolved by
``training.train.resolve_precision`` for this CPU) gets its own model with the same seed.

The variants take turns, one step each, so that on a shared machine they see the same load;
after ``--warmup`` untimed rounds it reports per variant the median wall time of a step as
pairs/s and the median process CPU time of a step, each as a ratio to the first variant. On
a machine that other jobs share the CPU-time ratio is the steadier of the two.

Run: ``.venv/bin/python bench/bench_cpu_train.py --pairs-dir storage/pairs/edr``
(defaults: ``--preset tiny --batch-size 64 --threads 2 --rounds 30 --warmup 3
--precisions fp32,auto``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

# Runnable from a checkout without `pip install -e .`: put the repository root on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astroclip_core.model.clip import build_model  # noqa: E402
from astroclip_core.tables.pairs import PairArrays, list_pairs_files  # noqa: E402
from astroclip_core.tables.schemas import IMAGE_SHAPE  # noqa: E402
from astroclip_core.training.augment import (  # noqa: E402
    AugmentConfig,
    batch_generator,
    train_inputs,
)
from astroclip_core.training.config import TrainConfig  # noqa: E402
from astroclip_core.training.data import PairsLoader, build_index  # noqa: E402
from astroclip_core.training.optim import build_optimizer, build_scheduler  # noqa: E402
from astroclip_core.training.train import resolve_precision, train_step  # noqa: E402

N_BATCHES = 6  # distinct batches the steps cycle through


def synthetic_pairs(n: int, n_wave: int, seed: int) -> PairArrays:
    """``n`` made-up decoded pairs: |N(0, 0.05)| nanomaggy cutouts, |N(1, 0.5)| spectra with
    unit ivar and ~2% of pixels masked."""
    rng = np.random.default_rng(seed)
    return PairArrays(
        targetid=np.arange(n, dtype=np.int64),
        z=rng.uniform(0.05, 1.0, n),
        image=np.abs(rng.normal(0, 0.05, (n, *IMAGE_SHAPE))).astype(np.float32),
        flux=np.abs(rng.normal(1, 0.5, (n, n_wave))).astype(np.float32),
        ivar=np.ones((n, n_wave), dtype=np.float32),
        mask=(rng.random((n, n_wave)) < 0.02).astype(np.uint8),
    )


def load_batches(pairs_dir: str | None, batch_size: int, n_wave: int) -> list[PairArrays]:
    """``N_BATCHES`` training batches of the pairs table under ``pairs_dir`` (its first ones in
    the default order), or synthetic ones."""
    if pairs_dir is None:
        pairs = synthetic_pairs(N_BATCHES * batch_size, n_wave, seed=0)
        return [pairs.take(np.arange(i, i + batch_size)) for i in range(0, len(pairs), batch_size)]
    files = [url for _, url in list_pairs_files(pairs_dir)]
    loader = PairsLoader(
        build_index(files, "train"), batch_size=batch_size, seed=0, prefetch_batches=0
    )
    batches = loader.iter_from(0)
    return [next(batches) for _ in range(N_BATCHES)]


def make_step(preset: str, precision: str, crop_pix_view: tuple[int, bool], seed: int):
    """A function ``step(i, batch) -> loss`` training one model of ``preset`` at ``precision``."""
    defaults = TrainConfig(out_dir="-", pairs_dir="-")
    torch.manual_seed(seed)
    model = build_model(preset)
    optimizer = build_optimizer(model, defaults.lr, defaults.weight_decay)
    scheduler = build_scheduler(optimizer, defaults.warmup_steps, 10_000, defaults.min_lr_ratio)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    crop_pix, view = crop_pix_view

    def step(i: int, batch: PairArrays) -> float:
        inputs = train_inputs(batch, crop_pix, AugmentConfig(), batch_generator(seed, 0, i), view)
        values = train_step(
            model, model, optimizer, scheduler, inputs, autocast, defaults.grad_clip
        )
        return float(values[0])  # the loss; also the step's one host sync

    return step


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, time the variants, print one JSON report."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs-dir", default=None, help="a release folder of the pairs table")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--rounds", type=int, default=30, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    p.add_argument("--precisions", default="fp32,auto", help="comma list; the first is the base")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cpu = torch.device("cpu")
    asked = a.precisions.split(",")
    model_config = build_model(a.preset, device="meta").config
    crop_view = (model_config.image.crop_pix, model_config.scan_view.weight > 0)
    batches = load_batches(a.pairs_dir, a.batch_size, model_config.spectrum.n_wavelength)
    names = [f"{q} ({resolve_precision(q, cpu)})" for q in asked]
    steps = [make_step(a.preset, resolve_precision(q, cpu), crop_view, seed=0) for q in asked]
    wall: list[list[float]] = [[] for _ in asked]
    cpu_s: list[list[float]] = [[] for _ in asked]
    losses: list[float] = [0.0] * len(asked)
    for i in range(a.warmup + a.rounds):
        for k, step in enumerate(steps):
            t0, c0 = time.perf_counter(), time.process_time()
            losses[k] = step(i, batches[i % len(batches)])
            if i >= a.warmup:
                wall[k].append(time.perf_counter() - t0)
                cpu_s[k].append(time.process_time() - c0)
    base_wall, base_cpu = statistics.median(wall[0]), statistics.median(cpu_s[0])
    rows = []
    for k, name in enumerate(names):
        w, c = statistics.median(wall[k]), statistics.median(cpu_s[k])
        rows.append(
            {
                "precision": name,
                "pairs_per_s": round(a.batch_size / w, 1),
                "speedup_wall": round(base_wall / w, 3),
                "step_cpu_s": round(c, 4),
                "speedup_cpu": round(base_cpu / c, 3),
                "last_loss": round(losses[k], 4),
            }
        )
    report = {
        "preset": a.preset,
        "batch_size": a.batch_size,
        "threads": a.threads,
        "rounds": a.rounds,
        "data": a.pairs_dir or "synthetic",
        "bf16_native": resolve_precision("auto", cpu) == "bf16",
        "rows": rows,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
