"""The contrastive loss: symmetric InfoNCE on L2-normalised embeddings.

Contract (every implementation is held to it by ``tests/test_model_loss.py``): given image and
spectrum embeddings (B, D) whose row i is one galaxy, the loss is the mean of the
cross-entropies of image->spectrum and spectrum->image logits ``scale * cos_sim`` against the
diagonal. It is symmetric in the two modalities, invariant to the embeddings' norms, and
returns named terms (:class:`LossTerms`). The logit scale is fixed (AstroCLIP: 15.5) or learned
as log(scale), clamped to at most ``max_logit_scale``.

Under DDP (``torch.distributed`` initialised with more than one process) the negatives span the
global batch, as open_clip's ``local_loss``: every rank all-gathers both embeddings, with
gradients (:func:`gather_rows`), and its loss is the mean over its own B rows of their
cross-entropies against all W x B rows of the other modality. The W ranks' losses then average
to the loss of one process holding the whole batch, and since DDP averages gradients over
ranks, the gradients equal that process's too (``tests/test_loss_global_batch.py`` holds this
on 2 gloo processes). Every rank must give the same B. With one process nothing is gathered
and the loss is computed exactly as without DDP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from astroclip_core.model.config import LossConfig


@dataclass(frozen=True)
class LossTerms:
    """Named loss terms; ``loss`` is the one to backpropagate, the rest are for logging."""

    loss: torch.Tensor  # scalar, mean of the two directions (over this rank's rows under DDP)
    loss_i2s: torch.Tensor  # scalar, image queries against spectra
    loss_s2i: torch.Tensor  # scalar, spectrum queries against images
    logit_scale: torch.Tensor  # scalar, the scale actually used
    # scalar, mean top-1 retrieval accuracy of both directions within the (global) batch
    accuracy: torch.Tensor
    # scalar, the scan-view InfoNCE (spectrum vs its own line scan) when that term is on; it is
    # already included in ``loss`` with its weight
    loss_view: torch.Tensor | None = None


def cosine_logits(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(B, N) ``scale * cos_sim``: row i of (B, D) ``a`` against every row of (N, D) ``b``."""
    return scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def _world_size() -> int:
    # 1 unless torch.distributed is initialised (torchrun / DDP)
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class _AllGatherRows(torch.autograd.Function):
    """All-gather (B, D) rows into (W * B, D); backward sums every rank's gradient of the
    gathered tensor and returns this rank's (B, D) slice of it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.first, ctx.rows = dist.get_rank() * len(x), len(x)
        return torch.cat(parts)  # (W * B, D), rank order

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # (W * B, D): rank k's loss's gradient w.r.t. every gathered row; the sum over k is the
        # gradient of the sum of all ranks' losses, of which this rank owns rows first..first+B
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total[ctx.first : ctx.first + ctx.rows]


def gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(B, D) rows of this rank -> ((W * B, D) rows of all W ranks in rank order, this rank's
    first row in them); differentiable.

    The backward pass hands each rank the gradient of the *sum* of every rank's loss w.r.t.
    its own rows, so that DDP's mean of the ranks' gradients is the gradient of the mean loss.
    A collective: every rank calls it in the same order with the same B. Without
    ``torch.distributed`` (or with one process) it returns ``(x, 0)``, the same tensor.
    """
    if _world_size() == 1:
        return x, 0
    return _AllGatherRows.apply(x), dist.get_rank() * len(x)


def global_batch_logits(
    a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This rank's rows against the global batch: (a->b logits, b->a logits, targets).

    ``a`` and ``b`` are this rank's (B, D) rows (row i of each is one item). Returns the
    (B, N) logits of its a rows against all N = W x B b rows, the (B, N) logits of its b rows
    against all a rows, and the (B,) column of each row's own pair. With one process N = B and
    the b->a logits are the transpose of the a->b ones.
    """
    a_all, first = gather_rows(a)  # (N, D)
    b_all, _ = gather_rows(b)  # (N, D)
    a_to_b = cosine_logits(a, b_all, scale)  # (B, N)
    # one process: gather_rows returned b itself, and b->a is the same matrix's columns
    b_to_a = a_to_b.T if b_all is b else cosine_logits(b, a_all, scale)  # (B, N)
    target = torch.arange(first, first + len(a), device=a.device)  # (B,)
    return a_to_b, b_to_a, target


def directional_cross_entropies(
    a_to_b: torch.Tensor, b_to_a: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a -> b, b -> a) mean cross-entropies of (B, N) logits against (B,) ``target`` columns."""
    return F.cross_entropy(a_to_b, target), F.cross_entropy(b_to_a, target)


def info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of (B, D) ``a`` and ``b`` (row i of each is one item), any norms.

    The mean of the a->b and b->a cross-entropies of ``scale * cos_sim`` against the diagonal;
    under DDP, of this rank's rows against the global batch (see the module docstring).
    """
    a_to_b, b_to_a = directional_cross_entropies(*global_batch_logits(a, b, scale))
    return 0.5 * (a_to_b + b_to_a)


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE with a fixed or learnable (clamped) logit scale, over the global
    batch under DDP (see the module docstring)."""

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
        """Loss terms for this rank's (B, D) image and spectrum embeddings (any norm; fp32).

        Under DDP a collective (both embeddings are all-gathered): every rank calls it.
        """
        if image_emb.shape != spectrum_emb.shape or image_emb.ndim != 2:
            raise ValueError(
                f"embeddings must both be (B, D), got {tuple(image_emb.shape)} and "
                f"{tuple(spectrum_emb.shape)}"
            )
        # fp32 logits even under bf16 autocast: the softmax over N needs the precision
        with torch.autocast(device_type=image_emb.device.type, enabled=False):
            scale = self.logit_scale().float()
            # (B, N): this rank's images against every spectrum of the global batch, and back
            i2s, s2i, target = global_batch_logits(image_emb.float(), spectrum_emb.float(), scale)
        loss_i2s, loss_s2i = directional_cross_entropies(i2s, s2i, target)
        with torch.no_grad():
            acc = 0.5 * (
                (i2s.argmax(1) == target).float().mean() + (s2i.argmax(1) == target).float().mean()
            )
        return LossTerms(
            loss=0.5 * (loss_i2s + loss_s2i),
            loss_i2s=loss_i2s,
            loss_s2i=loss_s2i,
            logit_scale=scale.detach(),
            accuracy=acc,
        )
