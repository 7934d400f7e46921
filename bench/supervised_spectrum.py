"""Can the tiny spectrum encoder read a redshift at all? Supervised z from the same inputs.

The contrastive embedding's spectrum k-NN misses most on the sample sky's ELGs (README: The
sample sky's lessons on real data). This asks whether that is the contrastive objective (the
image shows little of an ELG's redshift, so the loss asks little of it) or the encoder: it
trains the ``tiny`` preset's spectrum encoder and attention head, with a linear output, to
regress ln(1 + z) directly on the train split of a finished run's pairs (the same inputs and
noise augmentation as contrastive training: ``train_inputs``), then prints the test split's R²,
sigma_NMAD and outlier fraction, overall and, on a sample-sky run, by tracer::

    .venv/bin/python bench/supervised_spectrum.py --storage /tmp/x/storage [--steps 1500]

If the supervised encoder misses the ELGs as the k-NN does, the limit is what the encoder can
learn from these spectra in this budget, not the objective. A diagnostic, not a baseline of the
report: AstroCLIP's own spectrum baselines were not part of issue 16.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astroclip_core import fsio  # noqa: E402
from astroclip_core.evaluation.metrics import redshift_metrics  # noqa: E402
from astroclip_core.model.config import get_preset  # noqa: E402
from astroclip_core.model.heads import CrossAttentionHead  # noqa: E402
from astroclip_core.model.spectrum import SpectrumEncoder  # noqa: E402
from astroclip_core.samplesky.service import truth_path, truth_tracers  # noqa: E402
from astroclip_core.storage import StorageLayout  # noqa: E402
from astroclip_core.tables.pairs import PairArrays, list_pairs_files, read_pairs_file  # noqa: E402
from astroclip_core.training.augment import (  # noqa: E402
    AugmentConfig,
    eval_inputs,
    train_inputs,
)

CROP_PIX = 64  # the images are cropped but unused; any size the crop accepts will do


def main() -> int:
    """Parse the options, train the regressor, print its test-split figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", required=True, help="data root of a finished astroclip run")
    parser.add_argument("--release", default="edr")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4, help="peak AdamW learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--line-scan-mode", default=None, help="override the preset's")
    parser.add_argument("--scan-tokens", type=int, default=None, help="line_scan_tokens")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    layout = StorageLayout(args.storage)
    files = [url for _, url in list_pairs_files(layout.pairs_dir(args.release))]
    train, test = (_concat([read_pairs_file(u, s) for u in files]) for s in ("train", "test"))
    model = get_preset("tiny").model
    spectrum = model.spectrum
    if args.line_scan_mode:
        spectrum = replace(spectrum, line_scan_mode=args.line_scan_mode)
    if args.scan_tokens is not None:
        spectrum = replace(spectrum, line_scan_tokens=args.scan_tokens)
    net = torch.nn.ModuleDict(
        {
            "encoder": SpectrumEncoder(spectrum),
            "head": CrossAttentionHead(spectrum.width, model.head),
            "out": torch.nn.Linear(model.head.embed_dim, 1),  # ln(1 + z)
        }
    )
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    target = torch.from_numpy(np.log1p(train.z)).float()  # (N_train,)
    augment, gen = AugmentConfig(), torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    for step in range(args.steps):
        # 100 warm-up steps, then a cosine decay to 0
        warm = min(1.0, (step + 1) / 100)
        for group in opt.param_groups:
            group["lr"] = args.lr * warm * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        rows = rng.choice(len(train), args.batch_size, replace=False)
        x = train_inputs(train.take(rows), CROP_PIX, augment, gen)
        pred = net.out(net.head(net.encoder(x.flux, x.valid, x.ivar)))[:, 0]
        loss = torch.nn.functional.mse_loss(pred, target[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 250 == 0 or step == args.steps - 1:
            print(f"step {step:>5}  loss {loss.item():.5f}  {time.perf_counter() - start:.0f} s")
    z_pred = _predict(net, test)
    out: dict[str, object] = {"n_train": len(train), "n_test": len(test), "steps": args.steps,
                              "spectrum": {"line_scan_mode": spectrum.line_scan_mode,
                                           "line_scan_tokens": spectrum.line_scan_tokens}}  # fmt: skip
    m = redshift_metrics(test.z, z_pred)
    print(f"all    n {len(test):>5}  R2 {m.r2:.3f}  sigma_NMAD {m.sigma_nmad:.4f}  "
          f"outliers {m.outlier_fraction:.3f}")  # fmt: skip
    out["all"] = _rounded(m)
    truth = truth_path(layout.samplesky_dir(), args.release)
    if fsio.exists(str(truth)):
        tracer = truth_tracers(str(truth), test.targetid)
        for name in ("BGS", "LRG", "ELG"):
            rows = tracer == name
            if rows.sum() < 2:
                continue
            m = redshift_metrics(test.z[rows], z_pred[rows])
            print(f"{name:<6} n {int(rows.sum()):>5}  R2 {m.r2:.3f}  sigma_NMAD "
                  f"{m.sigma_nmad:.4f}  outliers {m.outlier_fraction:.3f}")  # fmt: skip
            out[name] = _rounded(m)
    print(json.dumps(out))
    return 0


def _concat(parts: list[PairArrays]) -> PairArrays:
    fields = ("targetid", "z", "image", "flux", "ivar", "mask")
    return PairArrays(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))


@torch.no_grad()
def _predict(net: torch.nn.Module, pairs: PairArrays) -> np.ndarray:
    """(N,) predicted z of every row, un-augmented inputs, in batches of 256."""
    net.eval()
    out = []
    for first in range(0, len(pairs), 256):
        x = eval_inputs(pairs.take(np.arange(first, min(first + 256, len(pairs)))), CROP_PIX)
        out.append(net.out(net.head(net.encoder(x.flux, x.valid, x.ivar)))[:, 0].numpy())
    return np.expm1(np.concatenate(out))


def _rounded(m) -> dict[str, float]:
    return {"r2": round(m.r2, 4), "sigma_nmad": round(m.sigma_nmad, 4),
            "outlier_fraction": round(m.outlier_fraction, 4)}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
