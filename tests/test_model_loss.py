"""The contrastive loss contract (see astroclip_core.model.loss)."""

from __future__ import annotations

import math

import pytest
import torch

from astroclip_core.model.config import LossConfig
from astroclip_core.model.loss import ContrastiveLoss


def _emb(b: int = 16, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)


def test_symmetric_in_the_two_modalities() -> None:
    loss = ContrastiveLoss(LossConfig())
    a, b = _emb()
    ab, ba = loss(a, b), loss(b, a)
    assert torch.allclose(ab.loss, ba.loss)
    assert torch.allclose(ab.loss_i2s, ba.loss_s2i)
    assert torch.allclose(ab.loss, 0.5 * (ab.loss_i2s + ab.loss_s2i))


def test_invariant_to_embedding_norms() -> None:
    loss = ContrastiveLoss(LossConfig())
    a, b = _emb()
    scaled = loss(a * 7.0, b * (torch.rand(len(b), 1) * 3 + 0.1))
    assert torch.allclose(loss(a, b).loss, scaled.loss, atol=1e-5)


def test_aligned_pairs_give_low_loss_and_full_accuracy() -> None:
    loss = ContrastiveLoss(LossConfig(init_logit_scale=100.0))
    a = torch.eye(16)
    terms = loss(a, a.clone())
    assert terms.loss.item() < 1e-3
    assert terms.accuracy.item() == 1.0


def test_identical_embeddings_give_chance_loss() -> None:
    loss = ContrastiveLoss(LossConfig())
    same = torch.ones(16, 8)
    assert math.isclose(loss(same, same).loss.item(), math.log(16), rel_tol=1e-5)


def test_fixed_scale_is_a_buffer_learnable_is_a_parameter() -> None:
    fixed = ContrastiveLoss(LossConfig(learnable=False, init_logit_scale=15.5))
    assert list(fixed.parameters()) == []
    assert math.isclose(fixed.logit_scale().item(), 15.5, rel_tol=1e-6)
    learned = ContrastiveLoss(LossConfig(learnable=True))
    assert [p.shape for p in learned.parameters()] == [torch.Size([])]


def test_learnable_scale_is_clamped() -> None:
    loss = ContrastiveLoss(LossConfig(learnable=True, max_logit_scale=100.0))
    with torch.no_grad():
        loss.log_logit_scale.fill_(10.0)  # exp(10) ~ 22026
    a, b = _emb()
    assert loss(a, b).logit_scale.item() == pytest.approx(100.0)


def test_mismatched_shapes_raise() -> None:
    with pytest.raises(ValueError, match="embeddings"):
        ContrastiveLoss(LossConfig())(torch.zeros(4, 8), torch.zeros(5, 8))
