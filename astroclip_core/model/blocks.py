"""Pre-norm transformer blocks shared by both encoders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v over (B, H, T, D) queries, keys and values -> (B, H, T, D).

    This is ``scaled_dot_product_attention`` (fused kernels), except for bf16 on CPU: there it
    is two batched matmuls and a softmax, because for the short sequences and narrow heads of
    the CPU preset (T <= 131, D = 24) PyTorch's CPU flash-attention kernel with its backward is
    about 5 times slower in bf16 (T = 131, 2 threads, forward and backward: ~55 ms against
    ~10 ms). In float32 that kernel is as fast as the matmuls (or faster), so float32 stays on
    it. Same mathematics; float rounding differs.
    """
    if q.device.type != "cpu" or q.dtype != torch.bfloat16:
        return F.scaled_dot_product_attention(q, k, v)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, H, T, T)
    # softmax in float32 also under bf16 autocast, as the fused kernels do
    return scores.softmax(dim=-1, dtype=torch.float32).to(v.dtype) @ v


class SelfAttention(nn.Module):
    """Multi-head self-attention through :func:`attention`."""

    def __init__(self, width: int, n_heads: int) -> None:
        super().__init__()
        if width % n_heads:
            raise ValueError(f"width {width} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)."""
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=-1)
        # (B, T, C) -> (B, H, T, C/H)
        q, k, v = (y.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2) for y in (q, k, v))
        y = attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Mlp(nn.Module):
    """Linear -> GELU -> Linear."""

    def __init__(self, width: int, hidden: int, out: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, out or width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., width) -> (..., out)."""
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, width: int, n_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, n_heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)."""
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """``depth`` blocks and a final LayerNorm over (B, T, C) tokens."""

    def __init__(self, width: int, depth: int, n_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, n_heads, mlp_ratio) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)."""
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)


def init_weights(module: nn.Module) -> None:
    """Truncated-normal(0.02) linear/conv weights, zero biases, unit LayerNorms (ViT recipe)."""
    if isinstance(module, nn.Linear | nn.Conv2d):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
