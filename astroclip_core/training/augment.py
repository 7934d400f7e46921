"""Batch augmentations in torch, and the conversion of decoded pairs to model inputs.

Image (on the whole batch, per-sample random choices, no per-row Python):
- a random ``crop_pix`` crop of the 152-px cutout, i.e. shifts of up to +-4 px for 144;
- a random horizontal flip and a random multiple of 90 degrees rotation (the sky has no
  preferred orientation, and the D4 symmetry keeps the pixel grid intact).
Spectrum:
- Gaussian noise with sigma = noise_scale / sqrt(ivar), 0 where ivar == 0;
- an overall flux scale 10^u, u uniform in +-``spectrum_scale_jitter_dex``,
  independent of the image: the pair then cannot be matched on exact brightness alone, so
  the embeddings weigh shape (colours, lines, redshift) more;
- pixels with mask != 0 or ivar == 0 are marked invalid; the encoder replaces them with the
  spectrum's own mean after standardisation (see ``astroclip_core.model.spectrum``);
- with ``view=True``, a second copy of each spectrum with its own noise draw (same sigma, no
  flux scale: the line scan standardises it away), the scan view's input
  (``astroclip_core.model.config.ScanViewConfig``). Independent noise keeps the two views from
  being matched on a shared noise pattern.

The randomness of a batch comes from a generator seeded by (seed, rank, step), so the
augmentation of any step is reproducible without carrying generator state through a resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from astroclip_core.model.image import centre_crop
from astroclip_core.tables.pairs import PairArrays


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run in training (evaluation uses none)."""

    flips: bool = True
    rot90: bool = True
    random_crop: bool = True
    spectrum_noise_scale: float = 1.0
    # 0.3 dex, a factor of 2. Without it both embeddings weigh exact brightness (the surest
    # cue for matching a pair), which dilutes k-NN in redshift: tiny, 1200 steps, default sky,
    # spectrum-embedding redshift R2 0.913 without, 0.937 with (one run each).
    spectrum_scale_jitter_dex: float = 0.3


@dataclass(frozen=True)
class ModelInputs:
    """One batch as the model takes it."""

    image_nmgy: torch.Tensor  # (B, 3, crop, crop) float32
    flux: torch.Tensor  # (B, L) float32
    valid: torch.Tensor  # (B, L) bool
    view_flux: torch.Tensor | None = None  # (B, L) float32, the scan view's noise draw

    def to(self, device: torch.device | str) -> ModelInputs:
        """The same batch on ``device`` (non-blocking copies)."""
        return ModelInputs(
            *(
                None if t is None else t.to(device, non_blocking=True)
                for t in (self.image_nmgy, self.flux, self.valid, self.view_flux)
            )
        )


def batch_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """A CPU generator that depends only on (seed, rank, step)."""
    mixed = np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed) & 0x7FFF_FFFF_FFFF_FFFF)


def _valid(batch: PairArrays) -> torch.Tensor:
    # (B, L) bool: good mask and positive inverse variance
    return torch.from_numpy((batch.mask == 0) & (batch.ivar > 0))


def augment_images(
    image: torch.Tensor, size_pix: int, config: AugmentConfig, gen: torch.Generator
) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size): per-sample random crop, flip and 90-degree turn.

    The random choices are drawn for the whole batch at once; each sample is then one view
    (slice, flip, rot90) copied into the output. On CPU these B slice copies are ~10x faster
    than a batched advanced-index gather of the crops, and they make one copy in total.
    """
    b, _c, h, w = image.shape
    if config.random_crop:
        oy = torch.randint(0, h - size_pix + 1, (b,), generator=gen).tolist()
        ox = torch.randint(0, w - size_pix + 1, (b,), generator=gen).tolist()
    else:
        oy, ox = [(h - size_pix) // 2] * b, [(w - size_pix) // 2] * b
    flip = (torch.rand(b, generator=gen) < 0.5).tolist() if config.flips else [False] * b
    turns = torch.randint(0, 4, (b,), generator=gen).tolist() if config.rot90 else [0] * b
    out = image.new_empty((b, image.shape[1], size_pix, size_pix))
    for i in range(b):
        view = image[i, :, oy[i] : oy[i] + size_pix, ox[i] : ox[i] + size_pix]
        if flip[i]:
            view = view.flip(-1)
        out[i] = torch.rot90(view, turns[i], dims=(-2, -1)) if turns[i] else view
    return out


def train_inputs(
    batch: PairArrays,
    crop_pix: int,
    config: AugmentConfig,
    gen: torch.Generator,
    view: bool = False,
) -> ModelInputs:
    """Augmented model inputs of a training batch (CPU tensors); ``view`` adds ``view_flux``."""
    image = augment_images(torch.from_numpy(batch.image), crop_pix, config, gen)
    ivar = torch.from_numpy(batch.ivar)
    clean = torch.from_numpy(batch.flux)
    sigma = torch.where(ivar > 0, ivar.clamp_min(1e-30).rsqrt(), torch.zeros(()))  # (B, L)

    def noisy() -> torch.Tensor:
        if config.spectrum_noise_scale <= 0:
            return clean
        return clean + config.spectrum_noise_scale * sigma * torch.randn(clean.shape, generator=gen)

    flux = noisy()
    if config.spectrum_scale_jitter_dex > 0:
        u = (2 * torch.rand(len(flux), 1, generator=gen) - 1) * config.spectrum_scale_jitter_dex
        flux = flux * 10**u  # (B, 1) per-spectrum scale
    view_flux = noisy() if view else None  # drawn last: the other draws do not depend on view
    return ModelInputs(image_nmgy=image, flux=flux, valid=_valid(batch), view_flux=view_flux)


def eval_inputs(batch: PairArrays, crop_pix: int) -> ModelInputs:
    """Un-augmented model inputs (centre crop, no noise), for embeddings and evaluation."""
    image = centre_crop(torch.from_numpy(batch.image), crop_pix).contiguous()
    return ModelInputs(image_nmgy=image, flux=torch.from_numpy(batch.flux), valid=_valid(batch))
