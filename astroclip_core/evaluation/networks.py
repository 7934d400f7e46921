"""The baselines' networks: an MLP and a small ResNet18-shaped CNN, plus the CNN's image inputs.

The CNN follows ResNet18's layout (He et al. 2016): a stem, four stages of two basic residual
blocks each (3x3 convolutions with batch norm), stride 2 at the start of stages 2-4, global
average pooling and a linear head. Only the widths and the input size are scaled down, so that
it trains from scratch in about a minute on two CPU cores (README: Evaluation). Its images are
normalised as the contrastive image encoder's are (:mod:`astroclip_core.model.image`): a centre
crop of the g,r,z cutout in nanomaggies, arcsinh of each band over its noise scale, then
optional binning.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from astroclip_core.model.image import centre_crop, fast_asinh


class Mlp(nn.Module):
    """(B, n_in) -> (B, n_out): Linear + GELU per hidden width, then a linear head."""

    def __init__(self, n_in: int, hidden: tuple[int, ...], n_out: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_in
        for h in hidden:
            layers += [nn.Linear(width, h), nn.GELU()]
            width = h
        layers.append(nn.Linear(width, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict (B, n_out) from (B, n_in)."""
        return self.net(x)


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 conv + BN, a projected shortcut when the shape changes."""

    def __init__(self, n_in: int, n_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(n_out)
        self.conv2 = nn.Conv2d(n_out, n_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(n_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or n_in != n_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(n_in, n_out, 1, stride=stride, bias=False), nn.BatchNorm2d(n_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_in, H, W) -> (B, n_out, H/stride, W/stride)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """(B, 3, S, S) arcsinh-scaled images -> (B, n_out); ResNet18's [2, 2, 2, 2] blocks."""

    def __init__(self, widths: tuple[int, int, int, int], n_out: int) -> None:
        super().__init__()
        # A 3x3 stride-1 stem and no max-pool (the CIFAR variant): the inputs are small.
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        n_in = widths[0]
        for stage, width in enumerate(widths):
            stride = 1 if stage == 0 else 2
            blocks += [BasicBlock(n_in, width, stride), BasicBlock(width, width, 1)]
            n_in = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict (B, n_out) from (B, 3, S, S)."""
        x = self.blocks(self.stem(x))  # (B, C, S/8, S/8)
        return self.head(x.mean(dim=(2, 3)))  # (B, n_out)


def cnn_inputs(
    image_nmgy: np.ndarray,
    crop_pix: int,
    bin_factor: int,
    band_scales_nmgy: tuple[float, float, float],
) -> torch.Tensor:
    """(N, 3, H, W) nanomaggies -> (N, 3, crop/bin, crop/bin) float32 network inputs.

    Centre crop, arcsinh(flux / band scale) per band, then ``bin_factor`` x ``bin_factor``
    average binning. Raises ValueError on non-finite pixels or a crop not divisible by the bin.
    """
    if crop_pix % bin_factor:
        raise ValueError(f"crop of {crop_pix} px is not a multiple of the bin {bin_factor}")
    image = torch.as_tensor(np.asarray(image_nmgy, dtype=np.float32))
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) g,r,z, got {tuple(image.shape)}")
    crop = centre_crop(image, crop_pix)  # (N, 3, crop, crop) view
    if not torch.isfinite(crop).all():
        raise ValueError("images hold NaN or inf pixels inside the centre crop")
    scales = torch.tensor(band_scales_nmgy, dtype=torch.float32).view(1, 3, 1, 1)
    x = fast_asinh(crop / scales)  # (N, 3, crop, crop), a fresh tensor
    if bin_factor > 1:
        x = F.avg_pool2d(x, bin_factor)  # (N, 3, crop/bin, crop/bin)
    return x.contiguous()


def dihedral_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(B, C, S, S) -> same shape: each image flipped / transposed at random (the 8 symmetries
    of the square; a galaxy's properties do not depend on its orientation on the sky)."""
    flips = torch.rand(3, x.shape[0], generator=gen) < 0.5  # (3, B)
    view = (-1, 1, 1, 1)
    x = torch.where(flips[0].view(view), x.flip(-1), x)
    x = torch.where(flips[1].view(view), x.flip(-2), x)
    return torch.where(flips[2].view(view), x.transpose(-1, -2), x)
