"""The run's history table and loss-curve figure."""

from __future__ import annotations

import math

import pyarrow as pa

from astroclip_core.fsio import atomic_write_bytes, atomic_write_parquet

# What each training step returns (astroclip_core.training.train.train_step), in this order;
# loss_view is NaN when the scan view is off.
STEP_TERMS = ("loss", "loss_i2s", "loss_s2i", "accuracy", "logit_scale", "loss_view", "grad_norm")
HISTORY_COLUMNS = ("step", "epoch", *STEP_TERMS, "lr", "pairs_per_s")


def history_table(history: list[dict]) -> pa.Table:
    """Rows of the history (one per logged step) as an Arrow table, ``step`` int64.

    A column missing from a row (``loss_view`` in checkpoints written before it existed) is NaN.
    """
    columns = {c: [row.get(c, math.nan) for row in history] for c in HISTORY_COLUMNS}
    types = {c: pa.int64() if c == "step" else pa.float64() for c in HISTORY_COLUMNS}
    return pa.table({c: pa.array(v, type=types[c]) for c, v in columns.items()})


def write_history(url: str, history: list[dict]) -> None:
    """Write ``history.parquet`` atomically."""
    atomic_write_parquet(url, history_table(history))


def write_loss_curve(url: str, history: list[dict], batch_size: int) -> None:
    """Write ``loss_curve.png``: loss and in-batch accuracy against step (atomically)."""
    from matplotlib.figure import Figure

    from astroclip_core.plots import render_png

    steps = [row["step"] for row in history]
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(steps, [row["loss"] for row in history], label="loss")
    view = [row.get("loss_view", math.nan) for row in history]
    if any(math.isfinite(v) for v in view):  # the scan-view term, when it is on
        ax_loss.plot(steps, view, label="scan view (unweighted)")
    ax_loss.axhline(
        math.log(batch_size), color="grey", ls="--", lw=1, label=f"chance, log({batch_size})"
    )
    ax_loss.set(xlabel="step", ylabel="symmetric InfoNCE", title="training loss")
    ax_loss.legend()
    ax_acc.plot(steps, [row["accuracy"] for row in history])
    ax_acc.set(xlabel="step", ylabel="top-1 in batch", title="in-batch retrieval", ylim=(0, 1))
    atomic_write_bytes(url, render_png(fig, dpi=100))
