"""Batch augmentations in torch, and the conversion of decoded pairs to model inputs.

Image (on the whole batch, per-sample random choices, no per-row Python):
- a random ``crop_pix`` crop of the 152-px cutout, i.e. shifts of up to +-4 px for 144;
- a random horizontal flip and a random multiple of 90 degrees rotation (the sky has no
  preferred orientation, and the D4 symmetry keeps the pixel grid intact).
Spectrum:
- Gaussian noise with sigma = noise_scale / sqrt(ivar), 0 where ivar == 0;
- pixels with mask != 0 or ivar == 0 are marked invalid; the encoder replaces them with the
  spectrum's own mean after standardisation (see ``astroclip_core.model.spectrum``);
- optionally, redshifted negatives (:func:`redshift_negatives`): each spectrum resampled to
  lambda * (1 + delta), a random |delta| in [min, max]. Label-free: a shift in ln(lambda) is a
  change of redshift whatever the galaxy's redshift is, so no truth is used.

The randomness of a batch comes from a generator seeded by (seed, rank, step), so the
augmentation of any step is reproducible without carrying generator state through a resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from astroclip_core.model.config import DESI_WAVE_MIN_ANGSTROM, DESI_WAVE_STEP_ANGSTROM
from astroclip_core.model.image import centre_crop
from astroclip_core.training.data import PairArrays


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run in training (evaluation uses none)."""

    flips: bool = True
    rot90: bool = True
    random_crop: bool = True
    spectrum_noise_scale: float = 1.0
    # Range of |delta| for redshifted negatives, lambda -> lambda (1 + delta); None: no negatives.
    redshift_negatives: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.redshift_negatives is not None:
            lo, hi = self.redshift_negatives
            if not 0.0 < lo <= hi < 0.5:
                raise ValueError(
                    f"redshift_negatives must be (min, max) with 0 < min <= max < 0.5, "
                    f"got {self.redshift_negatives}"
                )


@dataclass(frozen=True)
class ModelInputs:
    """One batch as the model takes it."""

    image_nmgy: torch.Tensor  # (B, 3, crop, crop) float32
    flux: torch.Tensor  # (B, L) float32
    valid: torch.Tensor  # (B, L) bool
    # Redshifted copies of the spectra, extra negatives for the image queries (or None).
    flux_negative: torch.Tensor | None = None  # (B, L) float32
    valid_negative: torch.Tensor | None = None  # (B, L) bool

    def to(self, device: torch.device | str) -> ModelInputs:
        """The same batch on ``device`` (non-blocking copies)."""
        return ModelInputs(
            *(
                None if t is None else t.to(device, non_blocking=True)
                for t in (
                    self.image_nmgy,
                    self.flux,
                    self.valid,
                    self.flux_negative,
                    self.valid_negative,
                )
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


def redshift_negatives(
    flux: torch.Tensor,
    valid: torch.Tensor,
    delta: torch.Tensor,
    wave_min_angstrom: float = DESI_WAVE_MIN_ANGSTROM,
    wave_step_angstrom: float = DESI_WAVE_STEP_ANGSTROM,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spectra moved to lambda * (1 + delta), and the window both share.

    flux (B, L), valid (B, L) bool on the linear wavelength grid, delta (B,) ->
    (valid of the originals cut to the common window (B, L), shifted flux (B, L), its valid).
    Output pixel j of a shifted spectrum is the original at lambda_j / (1 + delta), linearly
    interpolated. Both spectra are cut to the wavelengths where the shifted one is defined, so
    the two differ only by the shift and not by where their valid pixels start or end.
    """
    b, n = flux.shape
    wave = wave_min_angstrom + wave_step_angstrom * torch.arange(n, dtype=torch.float64)
    src = (wave[None, :] / (1 + delta.double()[:, None]) - wave_min_angstrom) / wave_step_angstrom
    inside = (src >= 0) & (src <= n - 1)  # (B, L) where the shifted spectrum is defined
    i0 = src.floor().clamp(0, n - 2).long()
    w = (src - i0).clamp(0, 1).float()
    f0, f1 = flux.gather(1, i0), flux.gather(1, i0 + 1)
    shifted = f0 * (1 - w) + f1 * w
    shifted_valid = valid.gather(1, i0) & valid.gather(1, i0 + 1) & inside
    return valid & inside, torch.where(shifted_valid, shifted, torch.zeros(())), shifted_valid


def train_inputs(
    batch: PairArrays, crop_pix: int, config: AugmentConfig, gen: torch.Generator
) -> ModelInputs:
    """Augmented model inputs of a training batch (CPU tensors)."""
    image = augment_images(torch.from_numpy(batch.image), crop_pix, config, gen)
    ivar = torch.from_numpy(batch.ivar)
    flux = torch.from_numpy(batch.flux)
    if config.spectrum_noise_scale > 0:
        sigma = torch.where(ivar > 0, ivar.clamp_min(1e-30).rsqrt(), torch.zeros(()))
        noise = torch.randn(flux.shape, generator=gen)
        flux = flux + config.spectrum_noise_scale * sigma * noise
    valid = _valid(batch)
    if config.redshift_negatives is None:
        return ModelInputs(image_nmgy=image, flux=flux, valid=valid)
    lo, hi = config.redshift_negatives
    size = lo + (hi - lo) * torch.rand(len(flux), generator=gen, dtype=torch.float64)
    sign = torch.where(torch.rand(len(flux), generator=gen) < 0.5, -1.0, 1.0).double()
    valid, flux_neg, valid_neg = redshift_negatives(flux, valid, sign * size)
    return ModelInputs(image, flux, valid, flux_neg, valid_neg)


def eval_inputs(batch: PairArrays, crop_pix: int) -> ModelInputs:
    """Un-augmented model inputs (centre crop, no noise), for embeddings and evaluation."""
    image = centre_crop(torch.from_numpy(batch.image), crop_pix).contiguous()
    return ModelInputs(image_nmgy=image, flux=torch.from_numpy(batch.flux), valid=_valid(batch))
