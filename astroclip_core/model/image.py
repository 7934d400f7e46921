"""The image encoder: per-band arcsinh scaling, optional binning, and a ViT over patches.

Normalisation lives inside the model, so the model always takes g,r,z cutouts in nanomaggies
(training crops, evaluation crops and notebooks all feed the same units).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from astroclip_core.model.blocks import Transformer
from astroclip_core.model.config import ImageEncoderConfig


def centre_crop(image: torch.Tensor, size_pix: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size_pix, size_pix), the central square."""
    h, w = image.shape[-2:]
    if h < size_pix or w < size_pix:
        raise ValueError(f"image of {h}x{w} px is smaller than the {size_pix}-px crop")
    top, left = (h - size_pix) // 2, (w - size_pix) // 2
    return image[..., top : top + size_pix, left : left + size_pix]


class ImageEncoder(nn.Module):
    """(B, 3, H, W) nanomaggies, H = W >= crop_pix -> (B, T, width) patch tokens."""

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        self.config = config
        scales = torch.tensor(config.band_scales_nmgy, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("band_scales_nmgy", scales, persistent=False)
        self.patch_embed = nn.Conv2d(
            3, config.width, kernel_size=config.patch_pix, stride=config.patch_pix
        )
        self.pos_embed = nn.Parameter(torch.zeros(1, config.n_tokens, config.width))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.transformer = Transformer(config.width, config.depth, config.n_heads, config.mlp_ratio)

    def forward(self, image_nmgy: torch.Tensor) -> torch.Tensor:
        """Encode images; a larger cutout (e.g. 152 px) is centre-cropped to ``crop_pix``."""
        cfg = self.config
        if image_nmgy.ndim != 4 or image_nmgy.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, H, W) g,r,z, got {tuple(image_nmgy.shape)}")
        x = centre_crop(image_nmgy, cfg.crop_pix)
        x = torch.asinh(x / self.band_scales_nmgy)  # (B, 3, crop, crop), dimensionless
        if cfg.bin_factor > 1:
            x = F.avg_pool2d(x, cfg.bin_factor)  # (B, 3, crop/bin, crop/bin)
        x = self.patch_embed(x)  # (B, C, side, side)
        x = x.flatten(2).transpose(1, 2)  # (B, T, C)
        return self.transformer(x + self.pos_embed)
