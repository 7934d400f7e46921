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
- options for spectra unlike the training set's (real DESI spectra for a model trained on the
  sample sky), all off by default so that the default batches do not change:

  - ``spectrum_noise_jitter_dex``: the added noise's sigma x 10^u per spectrum, u uniform in
    +-that and floored at 0 (noise cannot be taken away): a range of depths, so that the S/N
    tells less of the redshift than in the flux-limited training set;
  - ``spectrum_sky_residual_scale``: at sky-line pixels (sigma above ``SKY_SIGMA_RATIO`` x the
    spectrum's median sigma: the strong lines and the OH forest, wherever the ivar has them),
    residuals of that many sigma, correlated over ``SKY_RESIDUAL_PIX`` pixels (a line-wide
    misfit, not white noise);
  - ``spectrum_mask_runs``: up to that many runs of up to ``spectrum_mask_run_max_pix``
    pixels per spectrum masked (bad columns, cosmic rays, dead-arm stretches);
  - ``spectrum_tilt_max``: the flux (and its noise) times a power law (lambda / 6000 A)^a per
    spectrum, a uniform in +-that (ivar divided by its square): a continuum slope that says
    little of the redshift, as dust and the spread of real stellar populations make it, so
    that the embedding reads redshift from the features' positions (:func:`continuum_tilt`);

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

from astroclip_core.formats.desi import WAVELENGTH
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
    # Options for transfer to real spectra (module docstring); 0 = off.
    spectrum_noise_jitter_dex: float = 0.0
    spectrum_sky_residual_scale: float = 0.0
    spectrum_mask_runs: int = 0
    spectrum_mask_run_max_pix: int = 100
    spectrum_tilt_max: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "spectrum_noise_scale",
            "spectrum_scale_jitter_dex",
            "spectrum_noise_jitter_dex",
            "spectrum_sky_residual_scale",
            "spectrum_mask_runs",
            "spectrum_tilt_max",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"augment {name} must be >= 0, got {getattr(self, name)}")
        if self.spectrum_mask_run_max_pix < 1:
            raise ValueError(
                f"augment spectrum_mask_run_max_pix must be >= 1, got "
                f"{self.spectrum_mask_run_max_pix}"
            )


# A pixel is a sky-line pixel when its sigma exceeds this many times the spectrum's median
# sigma over valid pixels (sky lines raise the variance several-fold; arm ends too).
SKY_SIGMA_RATIO = 1.5
# Sky residuals are correlated over about the line profile: DESI's LSF FWHM is ~1.8 A (2-3
# pixels of 0.8 A); a 5-pixel box keeps the residual one line wide.
SKY_RESIDUAL_PIX = 5
# The tilt's pivot: mid-range of the 3600-9824 A coadd grid in ln(lambda) (sqrt of the ends,
# ~5950 A), so a tilt leaves the middle of the spectrum where it was.
TILT_PIVOT_ANGSTROM = 6000.0


@dataclass(frozen=True)
class ModelInputs:
    """One batch as the model takes it."""

    image_nmgy: torch.Tensor  # (B, 3, crop, crop) float32
    flux: torch.Tensor  # (B, L) float32
    valid: torch.Tensor  # (B, L) bool
    view_flux: torch.Tensor | None = None  # (B, L) float32, the scan view's noise draw
    ivar: torch.Tensor | None = None  # (B, L) float32, the catalogue's (pixel_weight="ivar")

    def to(self, device: torch.device | str) -> ModelInputs:
        """The same batch on ``device`` (non-blocking copies)."""
        return ModelInputs(
            *(
                None if t is None else t.to(device, non_blocking=True)
                for t in (self.image_nmgy, self.flux, self.valid, self.view_flux, self.ivar)
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
    scale = torch.ones(len(flux), 1)  # (B, 1) per-spectrum flux scale
    if config.spectrum_scale_jitter_dex > 0:
        u = (2 * torch.rand(len(flux), 1, generator=gen) - 1) * config.spectrum_scale_jitter_dex
        scale = 10**u
        flux = flux * scale
    view_flux = noisy() if view else None  # drawn last: the other draws do not depend on view
    valid = _valid(batch)
    # The transfer options draw after everything else, and only when on: with them off a
    # step's batch is the same as before they existed.
    if config.spectrum_noise_jitter_dex > 0 and config.spectrum_noise_scale > 0:
        flux = flux + scale * _extra_noise(sigma, config, gen)
    if config.spectrum_sky_residual_scale > 0:
        flux = flux + scale * sky_residuals(sigma, valid, config.spectrum_sky_residual_scale, gen)
    if config.spectrum_mask_runs > 0:
        valid = valid & ~random_mask_runs(
            valid.shape, config.spectrum_mask_runs, config.spectrum_mask_run_max_pix, gen
        )
    if config.spectrum_tilt_max > 0:
        tilt = continuum_tilt(WAVELENGTH, len(flux), config.spectrum_tilt_max, gen)  # (B, L)
        flux = flux * tilt
        ivar = ivar / tilt**2  # the noise is tilted with the flux
    # ivar as catalogued (tilted with the flux): the added noise scales every pixel's variance
    # alike, so the relative weights it gives (SpectrumEncoderConfig.pixel_weight) are unchanged.
    return ModelInputs(image_nmgy=image, flux=flux, valid=valid, view_flux=view_flux, ivar=ivar)


def continuum_tilt(
    wavelength_angstrom: np.ndarray, n: int, max_index: float, gen: torch.Generator
) -> torch.Tensor:
    """(n, L) factors (lambda / ``TILT_PIVOT_ANGSTROM``)^a, a uniform in +-``max_index`` per row.

    ``wavelength_angstrom`` (L,) is the spectra's grid. An index of 1 changes the 3600/9824 A
    flux ratio by a factor 2.7, about what A_V = 1 mag of dust does (Calzetti: A_3600 - A_9800
    ~ 1 mag).
    """
    a = (2 * torch.rand(n, 1, generator=gen, dtype=torch.float64) - 1) * max_index  # (n, 1)
    ln_ratio = torch.from_numpy(np.log(np.asarray(wavelength_angstrom) / TILT_PIVOT_ANGSTROM))
    return torch.exp(a * ln_ratio[None, :]).float()  # (n, L)


def _extra_noise(sigma: torch.Tensor, config: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """(B, L) noise that turns the added noise's sigma s into s x 10^u per spectrum (u uniform
    in +-``spectrum_noise_jitter_dex``): extra variance s^2 (10^2u - 1) where u > 0, and none
    where u <= 0 (noise already added cannot be taken away; the bright end comes from the
    training set's own spread)."""
    b = len(sigma)
    u = (2 * torch.rand(b, 1, generator=gen) - 1) * config.spectrum_noise_jitter_dex  # (B, 1)
    extra = (10 ** (2 * u.clamp_min(0)) - 1).sqrt() * config.spectrum_noise_scale
    return extra * sigma * torch.randn(sigma.shape, generator=gen)


def sky_residuals(
    sigma: torch.Tensor, valid: torch.Tensor, scale: float, gen: torch.Generator
) -> torch.Tensor:
    """(B, L) residuals of ``scale`` x sigma at sky-line pixels, 0 elsewhere.

    Sky-line pixels: sigma > ``SKY_SIGMA_RATIO`` x the spectrum's median sigma over valid
    pixels. The residual is unit-variance noise smoothed over ``SKY_RESIDUAL_PIX`` pixels
    (then rescaled to unit variance), so each line gets a one-line-wide misfit of random sign.
    """
    big = torch.where(valid, sigma, torch.nan)
    median = big.nanmedian(dim=1, keepdim=True).values.nan_to_num(0.0)  # (B, 1)
    sky = valid & (sigma > SKY_SIGMA_RATIO * median)  # (B, L)
    white = torch.randn(sigma.shape, generator=gen)
    smooth = torch.nn.functional.avg_pool1d(
        white[:, None], SKY_RESIDUAL_PIX, stride=1, padding=SKY_RESIDUAL_PIX // 2,
        count_include_pad=False,
    )[:, 0] * SKY_RESIDUAL_PIX**0.5  # fmt: skip
    return torch.where(sky, scale * sigma * smooth, torch.zeros(()))


def random_mask_runs(
    shape: tuple[int, int], max_runs: int, max_pix: int, gen: torch.Generator
) -> torch.Tensor:
    """(B, L) bool: per row, 0..``max_runs`` runs of 1..``max_pix`` pixels at random places."""
    b, length = shape
    n_runs = torch.randint(0, max_runs + 1, (b, 1), generator=gen)  # (B, 1)
    start = torch.randint(0, length, (b, max_runs), generator=gen)  # (B, R)
    width = torch.randint(1, max_pix + 1, (b, max_runs), generator=gen)
    used = torch.arange(max_runs)[None, :] < n_runs  # (B, R) the first n_runs runs count
    pix = torch.arange(length)[None, None, :]  # (1, 1, L)
    inside = (pix >= start[..., None]) & (pix < (start + width)[..., None]) & used[..., None]
    return inside.any(dim=1)


def eval_inputs(batch: PairArrays, crop_pix: int) -> ModelInputs:
    """Un-augmented model inputs (centre crop, no noise), for embeddings and evaluation."""
    image = centre_crop(torch.from_numpy(batch.image), crop_pix).contiguous()
    return ModelInputs(
        image_nmgy=image,
        flux=torch.from_numpy(batch.flux),
        valid=_valid(batch),
        ivar=torch.from_numpy(batch.ivar),
    )
