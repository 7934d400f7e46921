"""The training entry point: ``main(TrainConfig) -> TrainResult``.

The same code runs on CPU, on one GPU (bf16 autocast with ``precision='bf16'``, or by default
wherever the device computes bf16 natively: :func:`resolve_precision`) and under
``torchrun --nproc_per_node N -m astroclip_core.training.train config.json`` with DDP. Rank 0
writes into ``out_dir``: ``config.json`` at the start, ``checkpoint.pt`` every
``checkpoint_every`` steps, and at the end ``model.safetensors`` with ``config.json`` rewritten
as the model folder's (model and training config: :mod:`astroclip_core.model.pretrained`),
``history.parquet`` and ``loss_curve.png``. With ``resume=True`` a run continues from ``checkpoint.pt`` to the same
final step; on CPU the resumed run ends with the same weights as an uninterrupted one.
Whoever launched the run can follow it through ``main``'s ``on_log`` (rank 0 calls it with each
history row), which is how ``pipelines.train_process`` reports to Dagster without this module
knowing of it.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel

from astroclip_core.fsio import atomic_write_bytes, read_bytes
from astroclip_core.model.clip import AstroClipModel, build_model, resolve_model_config
from astroclip_core.model.loss import LossTerms
from astroclip_core.model.pretrained import WEIGHTS_NAME, save_pretrained
from astroclip_core.training.augment import ModelInputs, batch_generator, train_inputs
from astroclip_core.training.checkpoint import (
    TrainState,
    load_checkpoint,
    save_checkpoint,
)
from astroclip_core.training.config import TrainConfig, TrainResult
from astroclip_core.training.data import PairsLoader, build_index, source_files
from astroclip_core.training.distributed import (
    DistInfo,
    gather_floats,
    init_distributed,
    mean_over_ranks,
    shutdown_distributed,
)
from astroclip_core.training.optim import build_optimizer, build_scheduler
from astroclip_core.training.report import STEP_TERMS, write_history, write_loss_curve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPaths:
    """The files of one run under ``out_dir``."""

    out_dir: str

    def _join(self, name: str) -> str:
        return f"{self.out_dir.rstrip('/')}/{name}"

    def as_dict(self) -> dict[str, str]:
        """name -> path of every output."""
        names = {
            "model": WEIGHTS_NAME,
            "config": "config.json",
            "history": "history.parquet",
            "loss_curve": "loss_curve.png",
            "checkpoint": "checkpoint.pt",
        }
        return {key: self._join(name) for key, name in names.items()}


@dataclass
class _Run:
    """The live objects of a run (mutable: they are the training state)."""

    model: AstroClipModel
    ddp_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loader: PairsLoader
    total_steps: int
    step: int
    history: list[dict]
    # 'fp32' or 'bf16' as resolved on this device; a resumed run keeps its checkpoint's, so a
    # run moved to a machine without native bf16 (precision 'auto') does not switch mid-run.
    precision: str = "fp32"


def main(config: TrainConfig, on_log: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a model as ``config`` says and return what it did (see the module docstring).

    ``on_log``, when given, is called on rank 0 with each history row as it is logged (``step``,
    ``loss``, ``accuracy``, ``lr``, ``pairs_per_s``, ...: :data:`report.STEP_TERMS` and more).
    """
    info = init_distributed(config.device)
    try:
        return _train(config, info, on_log)
    finally:
        if info.enabled:
            shutdown_distributed()


def _train(
    config: TrainConfig, info: DistInfo, on_log: Callable[[dict], None] | None
) -> TrainResult:
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)  # same initial weights on every rank
    paths = RunPaths(config.out_dir).as_dict()
    run = _setup(config, info, paths)
    resumed_from = run.step
    global_batch = config.batch_size * info.world_size
    if info.is_main:
        atomic_write_bytes(paths["config"], config.to_json().encode())
        # the rows whose pairs are each other's negatives (the loss gathers across ranks)
        log.info(
            "global batch %d (%d per rank x %d ranks); steps %d..%d on %s",
            *(global_batch, config.batch_size, info.world_size),
            *(run.step + 1, run.total_steps, info.device),
        )
    pairs_per_s = _loop(config, info, run, paths, on_log)
    checksum = sum(float(p.detach().double().square().sum()) for p in run.model.parameters())
    checksums = gather_floats(checksum, info)
    if info.is_main and run.step == run.total_steps:
        # config.json becomes the model folder's: model config + this training config
        save_pretrained(
            run.model, config.out_dir, training=config.to_dict(), extra={"steps": run.step}
        )
        write_history(paths["history"], run.history)
        write_loss_curve(paths["loss_curve"], run.history, global_batch)
    counts = run.model.param_counts()
    return TrainResult(
        steps=run.step,
        final_loss=run.history[-1]["loss"] if run.history else math.nan,
        pairs_per_s=pairs_per_s,
        n_params_image=counts.image,
        n_params_spectrum=counts.spectrum,
        n_params_heads=counts.heads,
        n_params_total=counts.total,
        device=str(info.device),
        world_size=info.world_size,
        global_batch_size=global_batch,
        resumed_from_step=resumed_from,
        paths=paths,
        rank_weight_checksums=checksums,
    )


def _setup(config: TrainConfig, info: DistInfo, paths: dict[str, str]) -> _Run:
    loader = PairsLoader(
        build_index(source_files(config), "train"),
        batch_size=config.batch_size,
        seed=config.seed,
        rank=info.rank,
        world_size=info.world_size,
        shuffle_window_rows=config.shuffle_window_rows,
        cache_max_bytes=int(config.cache_max_gb * 2**30),
        shuffle_unit=config.shuffle_unit,
        prefetch_batches=config.prefetch_batches,
    )
    if config.steps is not None:
        total_steps = config.steps
    else:
        total_steps = max(1, math.ceil(config.epochs * loader.batches_per_epoch))
    model = build_model(config.model).to(info.device)
    optimizer = build_optimizer(model, config.lr, config.weight_decay)
    scheduler = build_scheduler(optimizer, config.warmup_steps, total_steps, config.min_lr_ratio)
    run = _Run(
        model, model, optimizer, scheduler, loader, total_steps, step=0, history=[],
        precision=resolve_precision(config.precision, info.device),
    )  # fmt: skip
    state = load_checkpoint(paths["checkpoint"]) if config.resume else None
    if state is not None:
        _restore(run, state, config, paths["checkpoint"])
    if info.enabled:
        ids = [info.local_rank] if info.device.type == "cuda" else None
        run.ddp_model = DistributedDataParallel(model, device_ids=ids)
    return run


def _restore(run: _Run, state: TrainState, config: TrainConfig, url: str) -> None:
    saved_model = state.config["model"]
    wanted = resolve_model_config(config.model).to_dict()
    saved = (
        saved_model
        if isinstance(saved_model, dict)
        else resolve_model_config(saved_model).to_dict()
    )
    if json.dumps(saved, sort_keys=True) != json.dumps(wanted, sort_keys=True):
        raise ValueError(f"{url}: checkpoint was trained with a different model config")
    if state.step > run.total_steps:
        raise ValueError(f"{url}: checkpoint is at step {state.step}, past steps={run.total_steps}")
    run.model.load_state_dict(state.model)
    run.optimizer.load_state_dict(state.optimizer)
    run.scheduler.load_state_dict(state.scheduler)
    torch.set_rng_state(state.torch_rng)
    if state.cuda_rng is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state.cuda_rng)
    run.step = state.step
    run.history = list(state.history)
    used = state.config.get(PRECISION_USED_KEY)
    if used in ("fp32", "bf16") and used != run.precision:
        log.warning(
            "%s was trained in %s; resuming in %s, not %s (precision %r resolves differently "
            "on this device)", url, used, used, run.precision, config.precision,
        )  # fmt: skip
        run.precision = used
    log.info("resumed from %s at step %d", url, state.step)


def _state(run: _Run, config: TrainConfig) -> TrainState:
    return TrainState(
        step=run.step,
        model=run.model.state_dict(),
        optimizer=run.optimizer.state_dict(),
        scheduler=run.scheduler.state_dict(),
        torch_rng=torch.get_rng_state(),
        cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        history=run.history,
        config={**config.to_dict(), PRECISION_USED_KEY: run.precision},
    )


# Key of the checkpoint's config dict that records the precision the run actually used.
PRECISION_USED_KEY = "precision_used"


def resolve_precision(precision: str, device: torch.device) -> str:
    """``'fp32'`` or ``'bf16'``: the autocast precision a run with ``precision`` uses on ``device``.

    ``'auto'`` is ``'bf16'`` where the device has native bf16 arithmetic, ``'fp32'`` elsewhere:
    a CUDA GPU that supports bf16, or a CPU with AVX512-BF16 or AMX (there the tiny preset's
    matmuls ran about 3 times faster than in float32; elsewhere bf16 would be emulated).
    Weights, optimiser state, the loss and the logits stay float32 either way.
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return "bf16" if native else "fp32"
    return "fp32"


def _batches(run: _Run):
    # Endless stream of this rank's batches from the current step on, epoch after epoch
    # (prefetched across epoch ends; closing this generator stops the loader's thread).
    yield from run.loader.iter_from(run.step)


def train_step(
    forward: Callable[..., LossTerms],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    inputs: ModelInputs,
    autocast,
    grad_clip: float,
) -> torch.Tensor:
    """One optimiser step; returns the (len(STEP_TERMS),) float64 values to log.

    ``forward`` is the model, its DDP wrapper or its ``torch.compile`` wrapper; ``model`` is
    the bare module whose gradients are clipped. No device sync happens here.
    """
    with autocast:
        if inputs.view_flux is None:
            terms = forward(inputs.image_nmgy, inputs.flux, inputs.valid, ivar=inputs.ivar)
        else:
            terms = forward(
                inputs.image_nmgy, inputs.flux, inputs.valid, inputs.view_flux, ivar=inputs.ivar
            )
    optimizer.zero_grad(set_to_none=True)
    terms.loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    # loss_view is NaN (not logged) when the scan view is off
    view = terms.loss_view if terms.loss_view is not None else torch.full_like(terms.loss, math.nan)
    values = (terms.loss, terms.loss_i2s, terms.loss_s2i, terms.accuracy, terms.logit_scale, view)
    return torch.stack([v.detach().double() for v in (*values, grad_norm)])


def _step(run: _Run, inputs: ModelInputs, config: TrainConfig, autocast) -> torch.Tensor:
    values = train_step(
        run.ddp_model, run.model, run.optimizer, run.scheduler, inputs, autocast, config.grad_clip
    )
    run.step += 1
    return values


class _Meter:
    """Sums the logged terms over a log interval and turns them into one history row."""

    def __init__(self, info: DistInfo, global_batch: int) -> None:
        self.info = info
        self.global_batch = global_batch
        self.sums = torch.zeros(len(STEP_TERMS), dtype=torch.float64, device=info.device)
        self.n = 0
        self.t0 = time.perf_counter()

    def add(self, values: torch.Tensor) -> None:
        """Accumulate one step (no device sync)."""
        self.sums += values
        self.n += 1

    def row(self, run: _Run, lr: float) -> dict:
        """Means over the interval (and over ranks), then reset."""
        means = (mean_over_ranks(self.sums, self.info) / self.n).tolist()
        now = time.perf_counter()
        row = dict(zip(STEP_TERMS, means, strict=True))
        row.update(
            step=run.step,
            epoch=run.step / run.loader.batches_per_epoch,
            lr=lr,
            pairs_per_s=self.n * self.global_batch / (now - self.t0),
        )
        self.sums.zero_()
        self.n, self.t0 = 0, now
        return row


def _loop(
    config: TrainConfig,
    info: DistInfo,
    run: _Run,
    paths: dict[str, str],
    on_log: Callable[[dict], None] | None,
) -> float:
    """Run the remaining steps; return the mean pairs/s (all ranks) of this process's steps."""
    crop = run.model.config.image.crop_pix
    view = run.model.scan_view_head is not None  # the scan view needs a second noise draw
    precision = run.precision
    if info.is_main:
        log.info("precision %s (%s asked) on %s", precision, config.precision, info.device)
    autocast = torch.autocast(
        device_type=info.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"
    )
    global_batch = config.batch_size * info.world_size
    meter = _Meter(info, global_batch)
    t_start, start_step = time.perf_counter(), run.step
    batches = _batches(run)
    while run.step < run.total_steps:
        gen = batch_generator(config.seed, info.rank, run.step)
        inputs = train_inputs(next(batches), crop, config.augment, gen, view=view).to(info.device)
        lr = run.scheduler.get_last_lr()[0]  # the rate this step uses
        meter.add(_step(run, inputs, config, autocast))
        last = run.step == run.total_steps
        if run.step % config.log_every == 0 or last:
            row = meter.row(run, lr)
            run.history.append(row)
            if info.is_main:
                log.info(
                    "step %d/%d loss %.4f acc %.3f %.1f pairs/s",
                    *(run.step, run.total_steps, row["loss"], row["accuracy"], row["pairs_per_s"]),
                )
                if on_log is not None:
                    on_log(row)
        if info.is_main and (run.step % config.checkpoint_every == 0 or last):
            save_checkpoint(paths["checkpoint"], _state(run, config))
        if config.stop_after_steps is not None and run.step >= config.stop_after_steps:
            break
    steps_done = run.step - start_step
    return steps_done * global_batch / max(time.perf_counter() - t_start, 1e-9)


def cli(argv: list[str] | None = None) -> int:
    """``python -m astroclip_core.training.train CONFIG.json`` (also under ``torchrun``)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m astroclip_core.training.train CONFIG.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = TrainConfig.from_dict(json.loads(read_bytes(args[0])))
    result = main(config)
    print(
        json.dumps(
            {
                "steps": result.steps,
                "final_loss": result.final_loss,
                "pairs_per_s": result.pairs_per_s,
                "world_size": result.world_size,
                "global_batch_size": result.global_batch_size,
                "rank_weight_checksums": list(result.rank_weight_checksums),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
