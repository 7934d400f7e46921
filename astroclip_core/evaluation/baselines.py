"""Trained baselines beside the zero-shot k-NN: MLP probes and a supervised CNN.

Contract, shared by :func:`fit_predict_mlp` and :func:`fit_predict_cnn`:

- Inputs are the train rows' features (or images) and targets ``(N, T)``, where NaN marks an
  unknown target of one row; and the rows to predict. One multi-output network is trained for
  all T targets, each standardised by its train mean and std; the loss is the mean squared
  error over the known (finite) entries only, so a NaN target is masked, never imputed.
- A ``val_fraction`` of the train rows (drawn with the seed) is held out; after each epoch the
  masked validation loss is measured and the weights of the best epoch are kept (early stopping
  by selection). The test rows are never seen in training or selection.
- AdamW with a linear warm-up over the first 5% of steps, then cosine decay to zero; float32
  on the CPU, on ``num_threads`` torch threads (restored afterwards). One thread by default:
  these nets are small, and on a shared 2-core machine two OpenMP threads were up to ten times
  slower than one whenever another process held a core (README: Evaluation). The same seed gives the same weights and predictions on the same machine and
  thread count (initial weights, hold-out draw, batch order and augmentations are all seeded).
- The result's ``prediction`` is ``(Q, T)`` float64 in the targets' own units.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from astroclip_core.evaluation.networks import Mlp, SmallResNet, cnn_inputs, dihedral_augment
from astroclip_core.evaluation.photometry import standardise
from astroclip_core.model.config import LEGACY_SURVEY_BAND_SCALES_NMGY

PREDICT_BATCH = 512  # rows per inference forward pass
WARMUP_FRACTION = 0.05


@dataclass(frozen=True)
class MlpConfig:
    """An MLP probe on fixed features (frozen embeddings or catalogue photometry)."""

    hidden: tuple[int, ...] = (256, 256)
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-2
    val_fraction: float = 0.15
    seed: int = 0
    num_threads: int = 1


@dataclass(frozen=True)
class CnnConfig:
    """The supervised CNN and its compute budget (README: Evaluation, the measured seconds).

    The network sees a ``crop_pix`` centre crop binned ``bin_factor`` x ``bin_factor``: with
    the defaults 64 px (16.8 arcsec at 0.262 arcsec/px) binned to 32 x 32.
    """

    crop_pix: int = 64
    bin_factor: int = 2
    widths: tuple[int, int, int, int] = (16, 32, 64, 128)
    epochs: int = 16
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    seed: int = 0
    num_threads: int = 1
    band_scales_nmgy: tuple[float, float, float] = LEGACY_SURVEY_BAND_SCALES_NMGY

    @property
    def input_pix(self) -> int:
        """Side of the network's input in pixels (crop / bin)."""
        return self.crop_pix // self.bin_factor


@dataclass(frozen=True)
class BaselinesConfig:
    """Both baselines' settings; the evaluation report takes one of these."""

    mlp: MlpConfig = field(default_factory=MlpConfig)
    cnn: CnnConfig = field(default_factory=CnnConfig)


@dataclass(frozen=True, eq=False)
class BaselineFit:
    """Predictions of one trained baseline and what its training cost."""

    prediction: np.ndarray  # (Q, T) float64, target units
    epochs: int  # epochs run
    best_epoch: int  # 1-based epoch whose weights were kept
    steps: int  # optimiser steps run
    n_params: int
    seconds: float  # wall time of preprocessing + training + prediction


@dataclass(frozen=True)
class _Schedule:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block on ``n`` intra-op torch threads, then restore the previous count."""
    if n < 1:
        raise ValueError(f"num_threads must be >= 1, got {n}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _holdout(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, validation rows) of ``n`` rows; no validation rows when n < 10 or fraction 0."""
    if not 0 <= fraction < 1:
        raise ValueError(f"val_fraction must lie in [0, 1), got {fraction}")
    n_val = int(round(fraction * n)) if n >= 10 else 0
    order = rng.permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _target_scaling(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std (T,) over the finite entries of (N, T); std 1 where constant."""
    finite = np.isfinite(y)
    empty = ~finite.any(axis=0)
    if empty.any():
        raise ValueError(
            f"target columns {np.flatnonzero(empty).tolist()} have no finite train row"
        )
    mean = np.nanmean(y, axis=0)
    std = np.nanstd(y, axis=0)
    return mean, np.where(std > 0, std, 1.0)


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of (pred - target)² over the finite entries of ``target`` (B, T); 0 when none."""
    known = torch.isfinite(target)
    diff = torch.where(known, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    return diff.square().sum() / known.sum().clamp(min=1)


def _lr_factor(step: int, total: int) -> float:
    warmup = max(1, int(WARMUP_FRACTION * total))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N, T) in eval mode, in batches of PREDICT_BATCH rows."""
    model.eval()
    parts = [model(x[i : i + PREDICT_BATCH]) for i in range(0, x.shape[0], PREDICT_BATCH)]
    return torch.cat(parts) if parts else torch.empty(0)


def _batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Index batches of ``order``; a last batch of one row is dropped (batch norm needs 2)."""
    batches = list(torch.split(order, batch_size))
    return [b for b in batches if len(b) > 1]


def _train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    rows: tuple[np.ndarray, np.ndarray],
    schedule: _Schedule,
    gen: torch.Generator,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> tuple[int, int]:
    """Train ``model`` on x[fit] -> y[fit] (standardised, NaN = unknown); keep the weights of
    the epoch with the lowest masked validation loss. Returns (best epoch, steps run)."""
    fit, val = (torch.from_numpy(r) for r in rows)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay
    )
    steps_per_epoch = len(_batches(torch.arange(len(fit)), schedule.batch_size))
    total = max(1, schedule.epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: _lr_factor(s, total))
    best_loss, best_epoch, best_state, step = math.inf, schedule.epochs, None, 0
    for epoch in range(1, schedule.epochs + 1):
        model.train()
        for batch in _batches(fit[torch.randperm(len(fit), generator=gen)], schedule.batch_size):
            xb = x[batch] if augment is None else augment(x[batch], gen)
            loss = masked_mse(model(xb), y[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            step += 1
        if len(val):
            val_loss = float(masked_mse(_predict(model, x[val]), y[val]))
            if val_loss < best_loss:
                best_loss, best_epoch, best_state = (
                    val_loss,
                    epoch,
                    copy.deepcopy(model.state_dict()),
                )
    if best_state is not None:
        model.load_state_dict(best_state)
    return best_epoch, step


def _fit_predict(
    build: Callable[[int], nn.Module],
    x_train: torch.Tensor,
    y_train: np.ndarray,
    x_test: torch.Tensor,
    schedule: _Schedule,
    val_fraction: float,
    seed: int,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> tuple[np.ndarray, int, int, int]:
    """Scale the targets, build and train a network, predict the test rows in target units.

    Returns (prediction (Q, T), best epoch, steps, parameter count).
    """
    y_train = np.asarray(y_train, dtype=np.float64)
    if y_train.ndim != 2 or y_train.shape[0] != x_train.shape[0]:
        raise ValueError(f"targets must be (N, T) with N = {x_train.shape[0]}, got {y_train.shape}")
    mean, std = _target_scaling(y_train)
    y = torch.from_numpy(((y_train - mean) / std).astype(np.float32))  # (N, T), NaN kept
    rows = _holdout(len(y), val_fraction, np.random.default_rng(seed))
    with torch.random.fork_rng(devices=[]):  # seeded weights, the caller's RNG untouched
        torch.manual_seed(seed)
        model = build(y.shape[1])
    gen = torch.Generator().manual_seed(seed)
    best_epoch, steps = _train(model, x_train, y, rows, schedule, gen, augment)
    pred = _predict(model, x_test).double().numpy() * std + mean  # (Q, T)
    return pred, best_epoch, steps, sum(p.numel() for p in model.parameters())


def fit_predict_mlp(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, config: MlpConfig
) -> BaselineFit:
    """Train an MLP on features (N, F) -> targets (N, T) and predict (Q, F) (module contract).

    Features are standardised by their train mean and std first.
    """
    t0 = time.perf_counter()
    x_train, x_test = np.asarray(x_train, np.float64), np.asarray(x_test, np.float64)
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if x.ndim != 2 or not np.isfinite(x).all():
            raise ValueError(f"{name} must be a finite (N, F) array, got shape {x.shape}")
    train_std, test_std = standardise(x_train, x_test)
    schedule = _Schedule(config.epochs, config.batch_size, config.lr, config.weight_decay)
    with torch_threads(config.num_threads):
        pred, best, steps, n_params = _fit_predict(
            lambda n_out: Mlp(x_train.shape[1], config.hidden, n_out),
            torch.from_numpy(train_std.astype(np.float32)),
            y_train,
            torch.from_numpy(test_std.astype(np.float32)),
            schedule,
            config.val_fraction,
            config.seed,
        )
    return BaselineFit(pred, config.epochs, best, steps, n_params, time.perf_counter() - t0)


def fit_predict_cnn(
    images_train_nmgy: np.ndarray,
    y_train: np.ndarray,
    images_test_nmgy: np.ndarray,
    config: CnnConfig,
) -> BaselineFit:
    """Train the small ResNet on g,r,z images (N, 3, H, W) in nanomaggies -> targets (N, T)
    and predict the test images (module contract); random flips and transposes augment."""
    t0 = time.perf_counter()
    prep = (config.crop_pix, config.bin_factor, config.band_scales_nmgy)
    x_train = cnn_inputs(images_train_nmgy, *prep)  # (N, 3, S, S)
    x_test = cnn_inputs(images_test_nmgy, *prep)  # (Q, 3, S, S)
    schedule = _Schedule(config.epochs, config.batch_size, config.lr, config.weight_decay)
    with torch_threads(config.num_threads):
        pred, best, steps, n_params = _fit_predict(
            lambda n_out: SmallResNet(config.widths, n_out),
            x_train,
            y_train,
            x_test,
            schedule,
            config.val_fraction,
            config.seed,
            augment=dihedral_augment,
        )
    return BaselineFit(pred, config.epochs, best, steps, n_params, time.perf_counter() - t0)


def mlp_definition(config: MlpConfig) -> str:
    """What the MLP baselines are, with their budget (``definitions.mlp``)."""
    return (
        f"MLP {list(config.hidden)} GELU on train-standardised inputs (L2-normalised frozen "
        "embeddings for image_mlp/spectrum_mlp; asinh magnitudes g, r, z and colours g-r, r-z "
        "for photometry_mlp), one multi-output net on train-standardised targets, NaN targets "
        f"masked in the loss; AdamW lr {config.lr:g} wd {config.weight_decay:g}, warm-up + "
        f"cosine, {config.epochs} epochs of batches of {config.batch_size}; "
        f"{config.val_fraction:.0%} of train held out to pick the best epoch; seed {config.seed}"
    )


def cnn_definition(config: CnnConfig, fit: BaselineFit) -> str:
    """What the supervised CNN is and what this run's training cost
    (``definitions.supervised_cnn``)."""
    return (
        f"ResNet18 layout ([2,2,2,2] basic blocks, widths {'-'.join(map(str, config.widths))}, "
        f"{fit.n_params:,} params) trained from scratch on the train split's g,r,z images: "
        f"{config.crop_pix}-px centre crop binned {config.bin_factor}x{config.bin_factor} to "
        f"{config.input_pix}x{config.input_pix}, arcsinh-scaled per band; random flips and "
        f"transposes; one multi-output net on standardised targets, NaN targets masked; AdamW "
        f"lr {config.lr:g}, warm-up + cosine, float32 CPU on {config.num_threads} thread(s); budget {config.epochs} epochs, "
        f"{fit.steps} steps of batch {config.batch_size}; {config.val_fraction:.0%} of train "
        f"held out, best epoch {fit.best_epoch}; seed {config.seed}; "
        f"{fit.seconds:.1f} s measured (preprocessing + training + prediction)"
    )
