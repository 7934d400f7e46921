"""Benchmark: training-step throughput, peak memory, FLOPs and MFU of a model preset on one GPU.

This is a *model-compute* benchmark: every batch is synthetic and generated on the device
(``torch.randn`` on the GPU), so there is no Parquet, no loader and no augmentation in the
timed loop; it measures what the model, the loss, the backward pass and the optimiser cost.
The step is ``astroclip_core.training.train.train_step``, the one training runs:
``build_model(preset)``, the loss terms the model's forward returns, bf16 autocast around the
forward, ``zero_grad``, ``backward``, ``clip_grad_norm_``, AdamW with the repo's decay groups
(``build_optimizer``) and its warmup-cosine ``LambdaLR``. Differences from ``train.py``, all chosen for the GPU: AdamW is
``fused=True`` on CUDA (``--no-fused`` to turn it off), TF32 is allowed for fp32 matmuls, and
``--compile`` wraps the model in ``torch.compile``.

For each row (the main run, each ``--sweep-batch`` size, and with ``--also-compile`` a
compiled run) it reports:
- pairs/s over ``--steps`` steps after ``--warmup`` untimed steps (``cuda.synchronize`` around
  the timed loop; ``--max-seconds`` ends the timed loop early and the steps done are reported);
- peak ``max_memory_allocated`` / ``max_memory_reserved`` (GiB) of that row alone;
- model FLOPs per pair of one training step (forward + backward), counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on one eager step (matmuls, convolutions and
  SDPA only; it counts attention backward with the score recompute, 14 T^2 C per layer; on
  CPU the SDPA kernel is not in its table, so fp32 CPU counts leave attention out, while bf16
  on CPU runs attention as two batched matmuls, ``model.blocks.attention``, counted as such),
  and
  an analytic estimate (see :func:`analytic_flops_per_pair`);
- MFU = counted FLOPs per second / peak dense bf16 FLOP/s of the device (table below,
  ``--peak-tflops`` overrides); also ``mfu_analytic`` from the analytic FLOPs.

The JSON (``--out``) is rewritten after every row, so a run cut short still leaves its rows.

GPU:  ``python bench/bench_gpu_train.py --preset base --batch-size 256 --steps 300
      --sweep-batch 128,512 --also-compile --out $OUT/gpu_bench.json``
CPU smoke check: ``python bench/bench_gpu_train.py --device cpu --preset tiny --steps 3
      --warmup 1 --batch-size 8``
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Runnable from a checkout without `pip install -e .`: put the repository root on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astroclip_core.fsio import atomic_write_bytes  # noqa: E402
from astroclip_core.model.clip import AstroClipModel, build_model  # noqa: E402
from astroclip_core.model.config import ModelConfig  # noqa: E402
from astroclip_core.tables.schemas import IMAGE_SHAPE  # noqa: E402
from astroclip_core.training.augment import ModelInputs  # noqa: E402
from astroclip_core.training.config import TrainConfig  # noqa: E402
from astroclip_core.training.optim import build_optimizer, build_scheduler  # noqa: E402
from astroclip_core.training.report import STEP_TERMS  # noqa: E402
from astroclip_core.training.train import train_step  # noqa: E402

GIB = 2**30
BENCH_KIND = (
    "model-compute benchmark: synthetic inputs generated on the device, no data loading or "
    "augmentation in the timed loop"
)
FLOP_NOTE = (
    "flops_per_pair_counted: torch.utils.flop_counter.FlopCounterMode over one eager "
    "forward+backward step (matmuls, convolutions, SDPA; elementwise ops, norms and the "
    "optimiser are not counted; SDPA backward includes the score recompute; on CPU SDPA is not "
    "counted, but bf16 on CPU computes attention with counted matmuls). "
    "flops_per_pair_analytic: per encoder 6 * matmul_weights * tokens + 12 * depth * tokens^2 "
    "* width, per head 6 * (k,v weights * tokens + q,out,mlp weights) + 12 * tokens * embed, "
    "plus the loss's 6 * batch * embed. MFU uses the counted figure."
)

# Peak dense (no sparsity) bf16 tensor-core FLOP/s, matched on the lower-cased device name in
# order: the first entry whose substrings all occur wins (so 'pcie'/'nvl' before plain 'h100').
PEAK_BF16_FLOPS_PER_S: tuple[tuple[tuple[str, ...], str, float], ...] = (
    (("h100", "pcie"), "H100 PCIe", 756e12),
    (("h100", "nvl"), "H100 NVL", 835e12),
    (("h200", "nvl"), "H200 NVL", 835e12),
    (("gh200",), "GH200 (Hopper SXM tensor cores)", 989.4e12),
    (("h200",), "H200 (Hopper SXM tensor cores)", 989.4e12),
    (("h100",), "H100 SXM", 989.4e12),
    (("a100",), "A100", 312e12),
)


@dataclass(frozen=True)
class BenchConfig:
    """What one invocation measures (built from the command line)."""

    preset: str = "base"
    device: str = "cuda"
    precision: str = "bf16"  # "bf16" autocast as train.py's precision='bf16', or "fp32"
    batch_size: int = 256
    steps: int = 300
    warmup: int = 20
    compile: bool = False
    also_compile: bool = False
    compile_steps: int = 100
    compile_mode: str | None = None  # torch.compile mode, e.g. "max-autotune-no-cudagraphs"
    sweep_batch: tuple[int, ...] = ()
    sweep_steps: int = 60
    max_seconds: float = 90.0  # per timed loop
    budget_seconds: float = 330.0  # whole run: rows that would start later are skipped
    peak_tflops: float | None = None
    fused: bool = True
    pool_batches: int = 2
    seed: int = 0
    threads: int | None = None
    out: str | None = None


@dataclass
class Row:
    """The measurements of one (batch size, compile) setting."""

    label: str
    batch_size: int
    compiled: bool
    steps_requested: int
    warmup_steps: int
    steps_timed: int = 0
    stopped_early: bool = False  # the timed loop hit --max-seconds
    timed_s: float = math.nan
    warmup_s: float = math.nan  # includes compilation for a compiled row
    pairs_per_s: float = math.nan
    ms_per_step: float = math.nan
    flops_per_pair_counted: float = math.nan
    flops_per_pair_analytic: float = math.nan
    counted_flops_by_op: dict[str, float] = field(default_factory=dict)  # op -> FLOPs per pair
    achieved_tflops_per_s: float = math.nan  # counted FLOPs x pairs/s
    mfu: float | None = None  # counted FLOPs
    mfu_analytic: float | None = None
    peak_mem_allocated_gib: float | None = None
    peak_mem_reserved_gib: float | None = None
    input_pool_gib: float = 0.0  # synthetic batches held on the device (part of the peak)
    mean_loss: float = math.nan  # over every step run (warm-up and timed)
    error: str | None = None


def parse_args(argv: list[str] | None) -> BenchConfig:
    """Command line -> :class:`BenchConfig`."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="base", help="tiny, base or paper")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=300, help="timed steps of the main row")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps before each row")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (all rows)")
    p.add_argument(
        "--also-compile",
        action="store_true",
        help="after the eager rows, add a torch.compile row at --batch-size",
    )
    p.add_argument("--compile-steps", type=int, default=100, help="timed steps of that row")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode (default: default)")
    p.add_argument(
        "--sweep-batch", default="", help="comma-separated extra batch sizes, e.g. 128,512"
    )
    p.add_argument("--sweep-steps", type=int, default=60, help="timed steps per sweep row")
    p.add_argument("--max-seconds", type=float, default=90.0, help="cap on each timed loop")
    p.add_argument(
        "--budget-seconds",
        type=float,
        default=330.0,
        help="skip the rows that would start after this many seconds of the whole run",
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="override the peak table")
    p.add_argument("--no-fused", action="store_true", help="foreach AdamW instead of fused")
    p.add_argument("--pool-batches", type=int, default=2, help="synthetic batches to cycle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--out", default=None, help="write the JSON report here")
    a = p.parse_args(argv)
    sweep = tuple(int(s) for s in a.sweep_batch.split(",") if s.strip())
    return BenchConfig(
        preset=a.preset,
        device=a.device,
        precision=a.precision,
        batch_size=a.batch_size,
        steps=a.steps,
        warmup=a.warmup,
        compile=a.compile,
        also_compile=a.also_compile,
        compile_steps=a.compile_steps,
        compile_mode=a.compile_mode,
        sweep_batch=sweep,
        sweep_steps=a.sweep_steps,
        max_seconds=a.max_seconds,
        budget_seconds=a.budget_seconds,
        peak_tflops=a.peak_tflops,
        fused=not a.no_fused,
        pool_batches=a.pool_batches,
        seed=a.seed,
        threads=a.threads,
        out=a.out,
    )


def peak_flops_per_s(device_name: str, override_tflops: float | None) -> tuple[float | None, str]:
    """(peak dense bf16 FLOP/s, where it came from); (None, reason) when unknown."""
    if override_tflops is not None:
        return override_tflops * 1e12, "--peak-tflops"
    name = device_name.lower()
    for needles, label, flops in PEAK_BF16_FLOPS_PER_S:
        if all(n in name for n in needles):
            return flops, f"table: {label}"
    return None, f"unknown device {device_name!r}: pass --peak-tflops for MFU"


def synthetic_batch(
    config: ModelConfig, batch_size: int, device: torch.device, gen: torch.Generator
) -> ModelInputs:
    """One batch of made-up pairs, created on ``device``, with the shapes train.py feeds.

    Images are (B, 3, 152, 152) nanomaggy-like |N(0, 0.05)| cutouts (the model centre-crops
    them to ``crop_pix``, as it does for evaluation; training crops on the CPU before the
    copy, so here the crop is a view inside the forward). Spectra are (B, L) |N(1, 0.5)| flux
    with ~2% of pixels invalid at random (the encoder standardises over the valid ones); a
    preset with the scan view also gets ``view_flux``, the same flux plus N(0, 0.1) noise.
    """
    n_wave = config.spectrum.n_wavelength
    kw = {"device": device, "generator": gen}
    image = torch.randn((batch_size, *IMAGE_SHAPE), **kw).abs_().mul_(0.05)  # (B, 3, 152, 152)
    flux = torch.randn((batch_size, n_wave), **kw).mul_(0.5).add_(1.0).abs_()  # (B, L)
    valid = torch.rand((batch_size, n_wave), **kw) > 0.02  # (B, L) bool
    view = None  # the scan view's second noise draw, for presets that train with it
    if config.scan_view.weight > 0:
        view = flux + 0.1 * torch.randn((batch_size, n_wave), **kw)
    # ivar 1/0.5^2, a tenth of the pixels at a tenth of it (sky lines), for pixel_weight="ivar"
    ivar = torch.where(torch.rand((batch_size, n_wave), **kw) < 0.1, 0.4, 4.0)  # (B, L)
    return ModelInputs(image_nmgy=image, flux=flux, valid=valid, view_flux=view, ivar=ivar)


def _matmul_weights(module: nn.Module) -> int:
    # Weights of the Linear/Conv2d layers: each is one multiply-add per weight per token.
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear | nn.Conv2d))


def analytic_flops_per_pair(model: AstroClipModel, batch_size: int) -> dict[str, float]:
    """Forward+backward FLOPs per pair from the architecture (the 6 N T rule, per part).

    Encoder (T tokens, width C, depth L): 6 * (Linear/Conv weights) * T for the dense layers
    (2 FLOPs per multiply-add, x3 for forward + input and weight gradients) plus
    12 * L * T^2 * C for attention scores and the weighted sum (4 T^2 C forward, x3).
    Head (one learned query over T tokens of width Ct, embed D): the k, v projections run on T
    tokens, q / out / MLP on one, and attention with one query is 12 * T * D.
    Loss: the (B, B) logits cost 2 * B * D per pair forward, x3. Biases, norms, GELU and the
    optimiser are left out. Returns per-part and total FLOPs per pair.
    """
    cfg = model.config
    t_image = cfg.image.n_tokens
    t_spec = cfg.spectrum.n_slices + 1  # + the statistics token
    d = cfg.head.embed_dim

    def encoder(enc: nn.Module, tokens: int, width: int, depth: int) -> float:
        return 6.0 * _matmul_weights(enc) * tokens + 12.0 * depth * tokens**2 * width

    def head(h: nn.Module, tokens: int) -> float:
        attn = h.attn
        if attn._qkv_same_embed_dim:  # token width == D: one packed (3D, D) in_proj_weight
            q_w, kv = d * d, 2 * d * d
        else:
            q_w = attn.q_proj_weight.numel()
            kv = attn.k_proj_weight.numel() + attn.v_proj_weight.numel()
        one_token = q_w + attn.out_proj.weight.numel()
        one_token += _matmul_weights(h.mlp)
        return 6.0 * (kv * tokens + one_token) + 12.0 * tokens * d

    parts = {
        "image_encoder": encoder(model.image_encoder, t_image, cfg.image.width, cfg.image.depth),
        "spectrum_encoder": encoder(
            model.spectrum_encoder, t_spec, cfg.spectrum.width, cfg.spectrum.depth
        ),
        "heads": head(model.image_head, t_image) + head(model.spectrum_head, t_spec),
        "loss": 6.0 * batch_size * d,
    }
    parts["total"] = sum(parts.values())
    return parts


def count_flops_per_pair(
    model: AstroClipModel, inputs: ModelInputs, autocast: torch.autocast
) -> tuple[float, dict[str, float]]:
    """(FLOPs per pair, per-op FLOPs per pair) of one eager forward+backward (no update)."""
    b = inputs.flux.shape[0]
    counter = FlopCounterMode(display=False)
    with counter:
        with autocast:
            if inputs.view_flux is None:
                terms = model(inputs.image_nmgy, inputs.flux, inputs.valid, ivar=inputs.ivar)
            else:
                terms = model(
                    inputs.image_nmgy, inputs.flux, inputs.valid, inputs.view_flux, ivar=inputs.ivar
                )
        terms.loss.backward()
    model.zero_grad(set_to_none=True)
    by_op = {str(op): n / b for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return counter.get_total_flops() / b, by_op


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    torch.compiler.reset()  # drop compiled graphs that hold the finished row's model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_row(
    bench: BenchConfig,
    device: torch.device,
    row: Row,
    peak: float | None,
) -> Row:
    """Build a fresh model + optimiser, warm up, time ``row.steps_requested`` steps, fill ``row``."""
    torch.manual_seed(bench.seed)
    model = build_model(bench.preset).to(device)
    train_defaults = TrainConfig(out_dir="unused", files=(), steps=1)  # lr, decay, clip, warmup
    fused = bench.fused and device.type == "cuda"
    optimizer = build_optimizer(model, train_defaults.lr, train_defaults.weight_decay, fused)
    total = row.warmup_steps + row.steps_requested + 1  # +1: the FLOP-count step's schedule
    scheduler = build_scheduler(
        optimizer, train_defaults.warmup_steps, total, train_defaults.min_lr_ratio
    )
    autocast = torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=bench.precision == "bf16"
    )
    gen = torch.Generator(device=device).manual_seed(bench.seed)
    pool = [
        synthetic_batch(model.config, row.batch_size, device, gen)
        for _ in range(max(bench.pool_batches, 1))
    ]
    row.input_pool_gib = (
        sum(t.numel() * t.element_size() for b in pool for t in (b.image_nmgy, b.flux, b.valid))
        / GIB
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    # FLOPs: one eager forward+backward at this batch size (outside the timing).
    row.flops_per_pair_counted, row.counted_flops_by_op = count_flops_per_pair(
        model, pool[0], autocast
    )
    row.flops_per_pair_analytic = analytic_flops_per_pair(model, row.batch_size)["total"]

    forward = torch.compile(model, mode=bench.compile_mode) if row.compiled else model
    grad_clip = train_defaults.grad_clip
    sums = torch.zeros(len(STEP_TERMS), dtype=torch.float64, device=device)  # as train._Meter

    t0 = time.perf_counter()
    for i in range(row.warmup_steps):
        batch = pool[i % len(pool)]
        sums += train_step(forward, model, optimizer, scheduler, batch, autocast, grad_clip)
    _sync(device)
    t1 = time.perf_counter()
    row.warmup_s = t1 - t0
    done = 0
    for i in range(row.steps_requested):
        batch = pool[(row.warmup_steps + i) % len(pool)]
        sums += train_step(forward, model, optimizer, scheduler, batch, autocast, grad_clip)
        done += 1
        # CPU-side clock (the queue runs ahead of the GPU by a bounded amount); the figure
        # reported below is taken after a synchronize.
        if time.perf_counter() - t1 > bench.max_seconds and done < row.steps_requested:
            row.stopped_early = True
            break
    _sync(device)
    t2 = time.perf_counter()
    row.steps_timed = done
    row.timed_s = t2 - t1
    row.ms_per_step = 1e3 * row.timed_s / max(done, 1)
    row.pairs_per_s = done * row.batch_size / row.timed_s if done else math.nan
    row.achieved_tflops_per_s = row.flops_per_pair_counted * row.pairs_per_s / 1e12
    if peak:
        row.mfu = row.flops_per_pair_counted * row.pairs_per_s / peak
        row.mfu_analytic = row.flops_per_pair_analytic * row.pairs_per_s / peak
    if device.type == "cuda":
        row.peak_mem_allocated_gib = torch.cuda.max_memory_allocated(device) / GIB
        row.peak_mem_reserved_gib = torch.cuda.max_memory_reserved(device) / GIB
    n_steps = row.warmup_steps + done
    row.mean_loss = float(sums[0] / max(n_steps, 1))
    if not math.isfinite(row.mean_loss):
        row.error = "non-finite loss"
    return row


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def print_row(row: Row) -> None:
    """One human-readable line per row."""
    if row.error and math.isnan(row.pairs_per_s):
        print(f"  {row.label:<22} B={row.batch_size:<5} ERROR {row.error}", flush=True)
        return
    print(
        f"  {row.label:<22} B={row.batch_size:<5} {_fmt(row.pairs_per_s, ',.0f'):>8} pairs/s  "
        f"{_fmt(row.ms_per_step, '.1f'):>7} ms/step  "
        f"{_fmt(row.flops_per_pair_counted / 1e9, '.1f')} GFLOP/pair counted "
        f"({_fmt(row.flops_per_pair_analytic / 1e9, '.1f')} analytic)  "
        f"{_fmt(row.achieved_tflops_per_s, '.1f')} TFLOP/s  MFU {_fmt(row.mfu, '.3f')}  "
        f"mem {_fmt(row.peak_mem_allocated_gib, '.1f')}/{_fmt(row.peak_mem_reserved_gib, '.1f')}"
        f" GiB  steps {row.steps_timed}{' (stopped early)' if row.stopped_early else ''}  "
        f"warmup {row.warmup_s:.1f}s  loss {row.mean_loss:.3f}"
        + (f"  [{row.error}]" if row.error else ""),
        flush=True,
    )


def _write(path: str | None, report: dict) -> None:
    if path:
        atomic_write_bytes(path, json.dumps(report, indent=2, default=str).encode())


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: run the rows, print them, write the JSON; 1 if any row failed."""
    bench = parse_args(argv)
    t_start = time.perf_counter()
    if bench.threads:
        torch.set_num_threads(bench.threads)
    device = torch.device(bench.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("CUDA is not available; use --device cpu", file=sys.stderr)
            return 2
        if device.index is None:  # "cuda" -> "cuda:N" so the memory queries name one device
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls outside autocast
        torch.backends.cudnn.allow_tf32 = True
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"cpu ({torch.get_num_threads()} threads)"
    peak, peak_source = peak_flops_per_s(device_name, bench.peak_tflops)
    meta = build_model(bench.preset, device="meta")
    counts = meta.param_counts()
    analytic = analytic_flops_per_pair(meta, bench.batch_size)
    print(f"device: {device_name}; torch {torch.__version__}, CUDA {torch.version.cuda}")
    print(f"{BENCH_KIND}")
    print(
        f"preset {bench.preset}: {counts.total / 1e6:.2f}M params (image {counts.image / 1e6:.2f}M,"
        f" spectrum {counts.spectrum / 1e6:.2f}M, heads {counts.heads / 1e6:.2f}M); "
        f"precision {bench.precision}; fused AdamW {bench.fused and device.type == 'cuda'}; "
        f"peak {_fmt(peak and peak / 1e12, '.1f')} TFLOP/s ({peak_source})",
        flush=True,
    )

    plan = [
        Row(
            "main" + (" compiled" if bench.compile else ""),
            bench.batch_size,
            bench.compile,
            bench.steps,
            bench.warmup,
        )
    ]
    plan += [
        Row(
            f"sweep{' compiled' if bench.compile else ''}",
            b,
            bench.compile,
            bench.sweep_steps,
            bench.warmup,
        )
        for b in bench.sweep_batch
        if b != bench.batch_size
    ]
    if bench.also_compile and not bench.compile:
        plan.append(Row("compiled", bench.batch_size, True, bench.compile_steps, bench.warmup))
    report = {
        "benchmark": BENCH_KIND,
        "flop_note": FLOP_NOTE,
        "device": device_name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "config": asdict(bench),
        "tf32_allowed": device.type == "cuda",
        "fused_adamw": bench.fused and device.type == "cuda",
        "peak_flops_per_s": peak,
        "peak_source": peak_source,
        "params": {
            "image": counts.image,
            "spectrum": counts.spectrum,
            "heads": counts.heads,
            "total": counts.total,
        },
        "tokens": {
            "image": meta.config.image.n_tokens,
            "spectrum": meta.config.spectrum.n_slices + 1,
        },
        "analytic_flops_per_pair_at_main_batch": analytic,
        "rows": [],
        "skipped": [],
    }
    failed = False
    for row in plan:
        if time.perf_counter() - t_start > bench.budget_seconds:
            report["skipped"].append(f"{row.label} B={row.batch_size}: over --budget-seconds")
            print(f"  skipped {row.label} B={row.batch_size}: over --budget-seconds", flush=True)
            continue
        try:
            row = run_row(bench, device, row, peak)
        except torch.OutOfMemoryError as exc:  # a sweep size too big for the card: report it
            row.error = f"out of memory: {str(exc).splitlines()[0]}"
        except Exception as exc:  # noqa: BLE001 - one bad row (e.g. compile) must not lose the rest
            row.error = f"{type(exc).__name__}: {exc}"[:2000]
        _free(device)
        failed |= row.error is not None
        print_row(row)
        report["rows"].append(asdict(row))
        report["elapsed_s"] = time.perf_counter() - t_start
        _write(bench.out, report)
    report["elapsed_s"] = time.perf_counter() - t_start
    _write(bench.out, report)
    print(f"total {report['elapsed_s']:.1f}s" + (f"; wrote {bench.out}" if bench.out else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
