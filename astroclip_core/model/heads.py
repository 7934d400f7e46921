"""Cross-attention heads: a learned query attends over an encoder's tokens, then an MLP."""

from __future__ import annotations

import torch
from torch import nn

from astroclip_core.model.blocks import Mlp
from astroclip_core.model.config import HeadConfig


class CrossAttentionHead(nn.Module):
    """(B, T, token_width) tokens -> (B, embed_dim) un-normalised embedding.

    One learned query (1, 1, D) attends over the layer-normed tokens (keys/values projected from
    token_width to D); the result goes through a residual pre-norm MLP and a final LayerNorm.
    """

    def __init__(self, token_width: int, config: HeadConfig) -> None:
        super().__init__()
        d = config.embed_dim
        self.query = nn.Parameter(torch.zeros(1, 1, d))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.ln_tokens = nn.LayerNorm(token_width)
        self.attn = nn.MultiheadAttention(
            d, config.n_heads, kdim=token_width, vdim=token_width, batch_first=True
        )
        self.ln_mlp = nn.LayerNorm(d)
        self.mlp = Mlp(d, int(d * config.mlp_ratio))
        self.ln_out = nn.LayerNorm(d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pool tokens into one embedding per item."""
        kv = self.ln_tokens(tokens)  # (B, T, Ct)
        q = self.query.expand(tokens.shape[0], -1, -1)  # (B, 1, D)
        x, _ = self.attn(q, kv, kv, need_weights=False)  # (B, 1, D)
        x = x + self.mlp(self.ln_mlp(x))
        return self.ln_out(x).squeeze(1)  # (B, D)


class ScanViewHead(nn.Module):
    """(B, n_scan) line-scan responses -> (B, embed_dim): asinh, then Linear-GELU-Linear, LayerNorm.

    asinh keeps the strongest lines (responses of tens of sigma) from dominating while staying
    linear near zero, where most responses are noise.
    """

    def __init__(self, n_scan: int, hidden: int, embed_dim: int) -> None:
        super().__init__()
        self.mlp = Mlp(n_scan, hidden, embed_dim)
        self.ln_out = nn.LayerNorm(embed_dim)

    def forward(self, scan: torch.Tensor) -> torch.Tensor:
        """Embed one line-scan map per row."""
        return self.ln_out(self.mlp(torch.asinh(scan)))
