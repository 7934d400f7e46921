"""Global-batch negatives under DDP (see astroclip_core.model.loss).

Two gloo processes on CPU, each with half a batch, must give the loss terms (averaged over the
ranks, as the training log does) and every parameter's gradient (after DDP's averaging) of one
process with the whole batch. The model has the scan view on, so both InfoNCE terms and the
learnable logit scale are covered.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pairs_fixture import micro_model_config
from torch.nn.parallel import DistributedDataParallel

from astroclip_core.model.clip import AstroClipModel, build_model
from astroclip_core.model.config import ScanViewConfig

WORLD_SIZE = 2
GLOBAL_BATCH = 8
TERMS = ("loss", "loss_i2s", "loss_s2i", "loss_view", "accuracy")


def _model() -> AstroClipModel:
    base = micro_model_config()
    config = replace(
        base,
        spectrum=replace(base.spectrum, line_scan_n_z=24),
        scan_view=ScanViewConfig(weight=0.5, hidden=16),
    )
    torch.manual_seed(0)  # the same initial weights in every process
    return build_model(config)


def _inputs(rows: slice) -> tuple[torch.Tensor, ...]:
    # image (B, 3, 152, 152), flux (B, 7781), valid (B, 7781) bool, view flux (B, 7781)
    g = torch.Generator().manual_seed(3)
    image = torch.rand(GLOBAL_BATCH, 3, 152, 152, generator=g)
    flux = torch.randn(GLOBAL_BATCH, 7781, generator=g) + 3.0
    valid = torch.rand(GLOBAL_BATCH, 7781, generator=g) > 0.01
    view = flux + 0.1 * torch.randn(GLOBAL_BATCH, 7781, generator=g)
    return tuple(x[rows] for x in (image, flux, valid, view))


def _step(model: AstroClipModel, forward: torch.nn.Module, rows: slice) -> dict:
    """Forward ``rows`` of the batch, backward; the loss terms and every parameter's gradient."""
    terms = forward(*_inputs(rows))
    terms.loss.backward()
    return {
        "terms": {name: getattr(terms, name).item() for name in TERMS},
        "grads": {name: p.grad.clone() for name, p in model.named_parameters()},
    }


def _rank_main(rank: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE)
    try:
        model = _model()
        half = GLOBAL_BATCH // WORLD_SIZE
        result = _step(model, DistributedDataParallel(model), slice(rank * half, (rank + 1) * half))
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_with_half_a_batch_each_match_one_process_with_the_whole(tmp_path) -> None:
    mp.spawn(_rank_main, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD_SIZE)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    model = _model()
    whole = _step(model, model, slice(None))

    for name in TERMS:
        mean = sum(r["terms"][name] for r in ranks) / WORLD_SIZE
        assert mean == pytest.approx(whole["terms"][name], abs=1e-5), name
    assert all(g is not None for g in whole["grads"].values())
    for r in ranks:
        assert r["grads"].keys() == whole["grads"].keys()
        for name, grad in whole["grads"].items():
            torch.testing.assert_close(r["grads"][name], grad, rtol=1e-5, atol=1e-5, msg=name)

    # Control: per-rank negatives (each half alone, nothing gathered) give another loss, so the
    # comparison above would fail without the gather.
    half = GLOBAL_BATCH // WORLD_SIZE
    local = [(_model(), slice(r * half, (r + 1) * half)) for r in range(WORLD_SIZE)]
    local_loss = sum(_step(m, m, rows)["terms"]["loss"] for m, rows in local) / WORLD_SIZE
    assert abs(local_loss - whole["terms"]["loss"]) > 0.1
