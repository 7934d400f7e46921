"""Checkpoints (resumable training state) and the final model file, written atomically.

A checkpoint holds the model and optimiser/scheduler state, the step, the torch RNG state,
the loss history so far and the run's config. It is serialised to memory and written with
``atomic_write_bytes`` (temp name + rename), so a run killed at any moment leaves either the
previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch

from astroclip_core.fsio import atomic_write_bytes, exists, read_bytes
from astroclip_core.model.clip import AstroClipModel
from astroclip_core.model.config import ModelConfig

CHECKPOINT_FORMAT = 1
MODEL_FORMAT = 1


@dataclass(frozen=True)
class TrainState:
    """Everything needed to continue a run exactly where it stopped."""

    step: int
    model: dict
    optimizer: dict
    scheduler: dict
    torch_rng: torch.Tensor
    cuda_rng: list[torch.Tensor] | None
    history: list[dict]
    config: dict


def _to_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_checkpoint(url: str, state: TrainState) -> None:
    """Write ``state`` to ``url`` atomically."""
    payload = {"format": CHECKPOINT_FORMAT, **state.__dict__}
    atomic_write_bytes(url, _to_bytes(payload))


def load_checkpoint(url: str) -> TrainState | None:
    """The state saved at ``url``, or None when there is no checkpoint there."""
    if not exists(url):
        return None
    payload = torch.load(io.BytesIO(read_bytes(url)), map_location="cpu", weights_only=False)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{url}: checkpoint format {payload.get('format')!r} is not {CHECKPOINT_FORMAT}"
        )
    del payload["format"]
    return TrainState(**payload)


def save_model(url: str, model: AstroClipModel, extra: dict | None = None) -> None:
    """Write the model's weights and config as ``model.pt`` atomically: the format before model
    folders (training now writes :mod:`astroclip_core.model.pretrained`'s), which still loads."""
    payload = {
        "format": MODEL_FORMAT,
        "model_config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    atomic_write_bytes(url, _to_bytes(payload))


def load_model(url: str, device: str | torch.device = "cpu") -> AstroClipModel:
    """The trained model at ``url``, in eval mode on ``device``.

    ``url`` is an old ``model.pt`` (:func:`save_model`), a ``model.safetensors`` file or a
    model folder (:mod:`astroclip_core.model.pretrained`).
    """
    from astroclip_core.model.pretrained import load_pretrained

    return load_pretrained(url, device=device)


def load_model_pt(url: str, device: str | torch.device = "cpu") -> AstroClipModel:
    """Rebuild a model saved by :func:`save_model` (``model.pt``), in eval mode on ``device``."""
    if not exists(url):
        raise FileNotFoundError(f"{url} does not exist")
    payload = torch.load(io.BytesIO(read_bytes(url)), map_location="cpu", weights_only=True)
    if payload.get("format") != MODEL_FORMAT:
        raise ValueError(
            f"{url}: model file format {payload.get('format')!r} is not {MODEL_FORMAT}"
        )
    model = AstroClipModel(ModelConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval()
