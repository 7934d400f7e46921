"""Process-group setup for ``torchrun``: one code path for 1 process and for DDP.

``torchrun`` sets RANK, WORLD_SIZE and LOCAL_RANK; without them the run is a single process.
The backend is nccl on GPU and gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one that writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True under DDP (more than one process)."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from err


def resolve_device(requested: str, local_rank: int) -> torch.device:
    """'cpu' | 'cuda' | 'auto' -> the device of this process ('cuda' uses LOCAL_RANK's GPU)."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' was asked for but torch sees no CUDA device")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(requested_device: str) -> DistInfo:
    """Pick the device and join the process group when WORLD_SIZE > 1 (env:// init)."""
    local_rank = _env_int("LOCAL_RANK", 0)
    info = DistInfo(
        rank=_env_int("RANK", 0),
        world_size=_env_int("WORLD_SIZE", 1),
        local_rank=local_rank,
        device=resolve_device(requested_device, local_rank),
    )
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if info.device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    return info


def shutdown_distributed() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def mean_over_ranks(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise mean of ``values`` over ranks (identity for one process)."""
    if not info.enabled:
        return values
    out = values.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def gather_floats(value: float, info: DistInfo) -> tuple[float, ...]:
    """``value`` from every rank, in rank order."""
    if not info.enabled:
        return (value,)
    mine = torch.tensor([value], dtype=torch.float64, device=info.device)
    parts = [torch.zeros_like(mine) for _ in range(info.world_size)]
    dist.all_gather(parts, mine)
    return tuple(float(p.item()) for p in parts)
