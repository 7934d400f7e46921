"""The contrastive loss: symmetric InfoNCE on L2-normalised embeddings.

Contract (every implementation is held to it by ``tests/test_model_loss.py``): given image and
spectrum embeddings (B, D) whose row i is one galaxy, the loss is the mean of the
cross-entropies of image->spectrum and spectrum->image logits ``scale * cos_sim`` against the
diagonal. It is symmetric in the two modalities, invariant to the embeddings' norms, and
returns named terms (:class:`LossTerms`). The logit scale is fixed (AstroCLIP: 15.5) or learned
as log(scale), clamped to at most ``max_logit_scale``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from astroclip_core.model.config import LossConfig


@dataclass(frozen=True)
class LossTerms:
    """Named loss terms; ``loss`` is the one to backpropagate, the rest are for logging."""

    loss: torch.Tensor  # scalar, mean of the two directions
    loss_i2s: torch.Tensor  # scalar, image queries against spectra
    loss_s2i: torch.Tensor  # scalar, spectrum queries against images
    logit_scale: torch.Tensor  # scalar, the scale actually used
    accuracy: torch.Tensor  # scalar, mean top-1 in-batch retrieval accuracy of both directions
    # scalar, the scan-view InfoNCE (spectrum vs its own line scan) when that term is on; it is
    # already included in ``loss`` with its weight
    loss_view: torch.Tensor | None = None


def cosine_logits(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(B, B) ``scale * cos_sim``: row i is item i of (B, D) ``a`` against every row of ``b``."""
    return scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def directional_cross_entropies(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows -> columns, columns -> rows) cross-entropies of (B, B) logits against the diagonal."""
    target = torch.arange(len(logits), device=logits.device)
    return F.cross_entropy(logits, target), F.cross_entropy(logits.T, target)


def info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of (B, D) ``a`` and ``b`` (row i of each is one item), any norms.

    The mean of the a->b and b->a cross-entropies of ``scale * cos_sim`` against the diagonal.
    """
    a_to_b, b_to_a = directional_cross_entropies(cosine_logits(a, b, scale))
    return 0.5 * (a_to_b + b_to_a)


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE with a fixed or learnable (clamped) logit scale."""

    def __init__(self, config: LossConfig) -> None:
        super().__init__()
        if not 0.0 < config.init_logit_scale <= config.max_logit_scale:
            raise ValueError(
                f"init_logit_scale {config.init_logit_scale} must lie in (0, {config.max_logit_scale}]"
            )
        self.config = config
        log_scale = torch.tensor(math.log(config.init_logit_scale))
        if config.learnable:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_logit_scale", log_scale)

    def logit_scale(self) -> torch.Tensor:
        """The current scale, exp(log scale) clamped to ``max_logit_scale``."""
        return self.log_logit_scale.exp().clamp(max=self.config.max_logit_scale)

    def forward(self, image_emb: torch.Tensor, spectrum_emb: torch.Tensor) -> LossTerms:
        """Loss terms for (B, D) image and spectrum embeddings (any norm; computed in fp32)."""
        if image_emb.shape != spectrum_emb.shape or image_emb.ndim != 2:
            raise ValueError(
                f"embeddings must both be (B, D), got {tuple(image_emb.shape)} and "
                f"{tuple(spectrum_emb.shape)}"
            )
        # fp32 logits even under bf16 autocast: the softmax over B needs the precision
        with torch.autocast(device_type=image_emb.device.type, enabled=False):
            scale = self.logit_scale().float()
            # (B, B): row i = image i against every spectrum
            logits = cosine_logits(image_emb.float(), spectrum_emb.float(), scale)
        loss_i2s, loss_s2i = directional_cross_entropies(logits)
        target = torch.arange(len(logits), device=logits.device)
        with torch.no_grad():
            acc = 0.5 * (
                (logits.argmax(1) == target).float().mean()
                + (logits.argmax(0) == target).float().mean()
            )
        return LossTerms(
            loss=0.5 * (loss_i2s + loss_s2i),
            loss_i2s=loss_i2s,
            loss_s2i=loss_s2i,
            logit_scale=scale.detach(),
            accuracy=acc,
        )
