"""Typed model configs and the one preset table.

A :class:`ModelConfig` fully describes an architecture; :data:`PRESETS` names three sizes:

=======  ==============================================  ===================================
preset   image ViT / spectrum transformer / embedding     meant for
=======  ==============================================  ===================================
tiny     96w x3 (36+1 tokens) / 96w x3 (130) / 128         two CPU cores, minutes; scan view
base     384w x12 (144 tokens) / 512w x6 (779) / 512      one GPU
paper    1024w x24 (144 tokens) / 768w x6 (779) / 1024    AstroCLIP's size (ViT-L/12), GPUs
=======  ==============================================  ===================================

``expected_params_m`` is what :func:`astroclip_core.model.clip.count_parameters` gives for the
built model (checked by ``tests/test_model_presets.py``); ``describe_presets()`` returns the
table as text (``python -m astroclip_core.model`` prints it).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from astroclip_core.fsio import read_bytes

# Per-band arcsinh softening scales (nanomaggies) for g, r, z. These are the legacypipe /
# Legacy Surveys viewer RGB scales (g 0.0066, r 0.01, z 0.025): about the sky noise of one
# pixel, so faint outskirts stay linear and bright cores are compressed logarithmically.
LEGACY_SURVEY_BAND_SCALES_NMGY = (0.0066, 0.01, 0.025)
# The DESI coadd's merged b+r+z grid: 3600 A + 0.8 A x pixel, 7781 pixels.
DESI_WAVE_MIN_ANGSTROM = 3600.0
DESI_WAVE_STEP_ANGSTROM = 0.8
# Upper end of the line scan's trial redshifts, as ln(1 + z): z = 1.6, past DESI's ELGs.
LINE_SCAN_LNZ_MAX = math.log(2.6)


@dataclass(frozen=True)
class ImageEncoderConfig:
    """A ViT over the centre crop of a g,r,z cutout.

    The (3, crop_pix, crop_pix) crop is arcsinh-scaled per band, average-pooled by
    ``bin_factor`` (1 = full resolution; 2 halves the tokens per side for the CPU preset),
    then cut into ``patch_pix`` x ``patch_pix`` patches: (crop_pix / bin_factor / patch_pix)^2
    tokens.

    ``aperture_radii_pix`` (native pixels, may be empty) adds one photometry token: each band's
    flux summed in circles of these radii about the crop centre, measured on the nanomaggy crop
    before any stretch or binning and arcsinh-scaled by that aperture's sky noise. It plays the
    part of the spectrum's statistics token: the integrated light and colours the patches'
    arcsinh stretch compresses.
    """

    width: int
    depth: int
    n_heads: int
    crop_pix: int = 144
    patch_pix: int = 12
    bin_factor: int = 1
    mlp_ratio: float = 4.0
    band_scales_nmgy: tuple[float, float, float] = LEGACY_SURVEY_BAND_SCALES_NMGY
    aperture_radii_pix: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if any(not 0 < r <= self.crop_pix / 2 for r in self.aperture_radii_pix):
            raise ValueError(
                f"aperture_radii_pix must lie in (0, {self.crop_pix / 2}], "
                f"got {self.aperture_radii_pix}"
            )

    @property
    def n_tokens(self) -> int:
        """Number of patch tokens per image (the photometry token not included)."""
        side = self.crop_pix // self.bin_factor
        if side % self.patch_pix:
            raise ValueError(
                f"binned crop side {side} px is not a multiple of patch_pix {self.patch_pix}"
            )
        return (side // self.patch_pix) ** 2


@dataclass(frozen=True)
class SpectrumEncoderConfig:
    """A transformer over overlapping slices of a standardised spectrum.

    The 7781-pixel spectrum is padded at the red end to a whole number of strides and cut into
    slices of ``slice_pix`` pixels every ``stride_pix`` pixels; one extra token carries the
    spectrum's own (log std, mean / std).

    ``grid="loglambda"`` first interpolates the standardised spectrum onto ``n_wavelength``
    points evenly spaced in ln(lambda) over the same range, so that a redshift is a pure shift
    and a rest-frame feature spans the same number of pixels at every redshift; slices are then
    cut from that grid ("linear", the default, slices the instrument's 0.8 A grid).
    """

    width: int
    depth: int
    n_heads: int
    slice_pix: int = 20
    stride_pix: int = 10
    n_wavelength: int = 7781
    mlp_ratio: float = 4.0
    # "learned": a trained (1 + n_slices, width) table; "loglambda": fixed sinusoids of each
    # slice's ln(wavelength), so a redshift (a shift in ln lambda) moves a feature smoothly
    # through position space from the first step (the tiny preset's few steps need that).
    position: str = "learned"
    grid: str = "linear"
    wave_min_angstrom: float = DESI_WAVE_MIN_ANGSTROM
    wave_step_angstrom: float = DESI_WAVE_STEP_ANGSTROM
    # The fixed line scan (astroclip_core.model.linescan): ``line_scan_n_z`` trial redshifts
    # (0 = no scan) evenly spaced in ln(1 + z) up to ``line_scan_lnz_max``. Its (n_z, channels)
    # map feeds the scan view of the loss (ScanViewConfig) and, when ``line_scan_tokens`` > 0,
    # that many extra encoder tokens, each holding n_z / line_scan_tokens neighbouring trial z.
    line_scan_n_z: int = 0
    line_scan_lnz_max: float = LINE_SCAN_LNZ_MAX
    line_scan_tokens: int = 0
    # "matrix": the scan is one fixed matrix of ~30 A-wide zero-sum kernels, one column per
    # trial z; "fine": line-width kernels on a 24x finer z grid, the strongest response kept per
    # trial z (astroclip_core.model.linescan.fine_line_scan). The same (n_z, channels) map.
    line_scan_mode: str = "matrix"
    # The statistics token's input, (log std, mean / std) of the valid pixels: "full" keeps it;
    # "none" zeroes it, so the encoder sees only the standardised shape and not the flux level
    # or the continuum's S/N. Those cues track redshift in the flux-limited sample sky but not
    # in another survey's selection (issue 16 §4: a real LRG's predicted z followed its
    # assumed brightness); the spectrum's noise itself still shows S/N.
    stats_token: str = "full"
    # How much each pixel counts, in the standardisation, the slices and the line scan:
    # "valid" 1 for a valid pixel, 0 otherwise; "ivar" also scales valid pixels by
    # min(1, sqrt(ivar / the spectrum's median valid ivar)), so pixels noisier than the
    # spectrum's typical one (sky lines, the OH forest, arm ends) are shrunk toward the
    # spectrum's mean as a redshift fitter's inverse-variance weights would discount them.
    # Without it the encoder never sees the ivar, and a sky-line residual looks like a line.
    pixel_weight: str = "valid"
    # The slices' input without its smooth continuum: with ``continuum_window_pix`` > 0 the
    # spectrum minus its weighted running mean over that many pixels (odd; 501 = 400 A) is what
    # the slices see, so the encoder reads features (lines, breaks, bands) and not the
    # continuum's colour. The statistics token and the line scan keep the whole spectrum.
    continuum_window_pix: int = 0
    # With the window: that running continuum, in the spectrum's standardised units, averaged
    # into ``continuum_bins`` equal stretches, as one more token (after the slices), so the
    # encoder keeps the spectrum's broad colour beside its features (0 = no such token).
    continuum_bins: int = 0

    def __post_init__(self) -> None:
        if self.continuum_bins < 0 or (self.continuum_bins and not self.continuum_window_pix):
            raise ValueError(
                f"continuum_bins {self.continuum_bins} must be >= 0, and > 0 only with "
                f"continuum_window_pix > 0 (got {self.continuum_window_pix})"
            )
        if self.continuum_window_pix < 0 or (
            self.continuum_window_pix and self.continuum_window_pix % 2 == 0
        ):
            raise ValueError(
                f"continuum_window_pix must be 0 or an odd number of pixels, "
                f"got {self.continuum_window_pix}"
            )
        if self.stats_token not in ("full", "none"):
            raise ValueError(f"stats_token must be 'full' or 'none', got {self.stats_token!r}")
        if self.pixel_weight not in ("valid", "ivar"):
            raise ValueError(f"pixel_weight must be 'valid' or 'ivar', got {self.pixel_weight!r}")
        if self.position not in ("learned", "loglambda"):
            raise ValueError(f"position must be 'learned' or 'loglambda', got {self.position!r}")
        if self.grid not in ("linear", "loglambda"):
            raise ValueError(f"grid must be 'linear' or 'loglambda', got {self.grid!r}")
        if self.line_scan_n_z < 0 or self.line_scan_tokens < 0 or self.line_scan_lnz_max <= 0:
            raise ValueError(
                f"line_scan_n_z {self.line_scan_n_z} and line_scan_tokens "
                f"{self.line_scan_tokens} must be >= 0 and line_scan_lnz_max "
                f"{self.line_scan_lnz_max} > 0"
            )
        if self.line_scan_mode not in ("matrix", "fine"):
            raise ValueError(
                f"line_scan_mode must be 'matrix' or 'fine', got {self.line_scan_mode!r}"
            )
        if self.line_scan_tokens and self.line_scan_n_z % self.line_scan_tokens:
            raise ValueError(
                f"line_scan_tokens {self.line_scan_tokens} must divide line_scan_n_z "
                f"{self.line_scan_n_z} (and the scan needs line_scan_n_z > 0)"
            )

    @property
    def ln_lambda_step(self) -> float:
        """Pixel step in ln(lambda) of the even ln-lambda grid (same range and pixel count)."""
        ln_range = math.log1p(
            (self.n_wavelength - 1) * self.wave_step_angstrom / self.wave_min_angstrom
        )
        return ln_range / (self.n_wavelength - 1)

    @property
    def padded_length(self) -> int:
        """Spectrum length after red-end padding so that the slices tile it exactly."""
        extra = max(self.n_wavelength - self.slice_pix, 0)
        n_steps = -(-extra // self.stride_pix)  # ceil
        return self.slice_pix + n_steps * self.stride_pix

    @property
    def n_slices(self) -> int:
        """Number of slice tokens (without the statistics token)."""
        return (self.padded_length - self.slice_pix) // self.stride_pix + 1


@dataclass(frozen=True)
class HeadConfig:
    """Cross-attention heads (one per modality) with a learned query, then an MLP."""

    embed_dim: int
    n_heads: int
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class LossConfig:
    """Logit scale of the symmetric InfoNCE loss.

    ``learnable=False`` keeps the scale at ``init_logit_scale`` (AstroCLIP fixed 15.5);
    ``learnable=True`` learns log(scale), clamped to at most ``max_logit_scale`` (CLIP: 100).
    """

    learnable: bool = False
    init_logit_scale: float = 15.5
    max_logit_scale: float = 100.0


@dataclass(frozen=True)
class ScanViewConfig:
    """A second, label-free contrastive term: each spectrum against its own line scan.

    With ``weight`` > 0 the loss adds ``weight`` x symmetric InfoNCE between the spectrum
    embeddings and a small MLP's embedding of the line-scan map (``hidden`` wide) of the same
    spectra under an independent noise draw. The image alone can confirm a redshift only to
    photometric precision, so the image-spectrum term keeps little more than that in the
    spectrum embedding; the scan view rewards the spectrum's own, precise redshift. It needs
    ``SpectrumEncoderConfig.line_scan_n_z`` > 0; the MLP is used in training only.
    """

    weight: float = 0.0
    hidden: int = 256

    def __post_init__(self) -> None:
        if self.weight < 0 or self.hidden < 1:
            raise ValueError(
                f"scan view weight {self.weight} must be >= 0, hidden {self.hidden} >= 1"
            )


@dataclass(frozen=True)
class ModelConfig:
    """The whole architecture: both encoders, the heads and the loss."""

    image: ImageEncoderConfig
    spectrum: SpectrumEncoderConfig
    head: HeadConfig
    loss: LossConfig = field(default_factory=LossConfig)
    scan_view: ScanViewConfig = field(default_factory=ScanViewConfig)

    def __post_init__(self) -> None:
        if self.scan_view.weight > 0 and self.spectrum.line_scan_n_z == 0:
            raise ValueError("scan_view.weight > 0 needs spectrum.line_scan_n_z > 0 (a line scan)")

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError`` naming them."""
        image = dict(data["image"])
        image["band_scales_nmgy"] = tuple(
            image.get("band_scales_nmgy", LEGACY_SURVEY_BAND_SCALES_NMGY)
        )
        image["aperture_radii_pix"] = tuple(image.get("aperture_radii_pix", ()))
        return cls(
            image=ImageEncoderConfig(**image),
            spectrum=SpectrumEncoderConfig(**data["spectrum"]),
            head=HeadConfig(**data["head"]),
            loss=LossConfig(**data.get("loss", {})),
            scan_view=ScanViewConfig(**data.get("scan_view", {})),
        )


@dataclass(frozen=True)
class Preset:
    """A named model size with its parameter count (millions) and intended hardware."""

    name: str
    model: ModelConfig
    expected_params_m: float
    hardware: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="tiny",
            model=ModelConfig(
                # 2x binning: 72 px -> 6x6 = 36 tokens; 120-px slices at stride 60 -> 130 tokens
                # (fewer tokens than 80/40's 194, so training is faster; rates in the README),
                # plus a photometry token of g, r, z fluxes in 3/6/12/24-px apertures: the
                # ViT alone measured faint, compact (high-z LRG) colours poorly.
                image=ImageEncoderConfig(
                    width=96,
                    depth=3,
                    n_heads=4,
                    bin_factor=2,
                    aperture_radii_pix=(3.0, 6.0, 12.0, 24.0),
                ),
                # plus the scan view: the loss also matches each spectrum to its own line scan
                # (96 trial z up to 1.6; the scan-view MLP is 0.205M of the heads). The image
                # alone confirms redshift only photometrically (R2 with and without it: README).
                spectrum=SpectrumEncoderConfig(
                    width=96,
                    depth=3,
                    n_heads=4,
                    slice_pix=120,
                    stride_pix=60,
                    position="loglambda",
                    line_scan_n_z=96,
                    # sky-line and arm-end pixels discounted by their ivar: on the default sky
                    # spectrum k-NN sigma_NMAD 0.043 -> 0.028, and the real-LRG transfer check
                    # 0.040 -> 0.027 (README: The sample sky's lessons on real data)
                    pixel_weight="ivar",
                    # the slices see the spectrum less its 3,200 A running mean, so the encoder
                    # reads features more than the continuum's colour: two seeds on the default
                    # sky, spectrum k-NN R2 0.916/0.921 -> 0.935/0.930, image 0.890/0.891 ->
                    # 0.899/0.893, recall@10 0.62/0.58 -> 0.60/0.66 (README: The sample sky's
                    # lessons on real data; 2001 px transfers better but costs retrieval)
                    continuum_window_pix=4001,
                ),
                head=HeadConfig(embed_dim=128, n_heads=4),
                loss=LossConfig(learnable=True, init_logit_scale=10.0),
                scan_view=ScanViewConfig(weight=0.5, hidden=256),
            ),
            expected_params_m=1.316,
            hardware="2 CPU cores, minutes on the sample sky",
        ),
        Preset(
            name="base",
            model=ModelConfig(
                image=ImageEncoderConfig(width=384, depth=12, n_heads=6),  # ViT-S/12
                spectrum=SpectrumEncoderConfig(width=512, depth=6, n_heads=8),
                head=HeadConfig(embed_dim=512, n_heads=8),
                loss=LossConfig(learnable=True, init_logit_scale=14.3),
            ),
            expected_params_m=47.02,
            hardware="one GPU (bf16)",
        ),
        Preset(
            name="paper",
            model=ModelConfig(
                image=ImageEncoderConfig(width=1024, depth=24, n_heads=16),  # ViT-L/12
                spectrum=SpectrumEncoderConfig(width=768, depth=6, n_heads=6),
                head=HeadConfig(embed_dim=1024, n_heads=16),
                loss=LossConfig(learnable=False, init_logit_scale=15.5),
            ),
            # image 302.9M (ViT-L, as published), spectrum 43.1M (published: 43M), heads 24.7M
            expected_params_m=370.72,
            hardware="one or more large GPUs (bf16, DDP via torchrun)",
        ),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name raises ``KeyError`` listing the known ones."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name]


def preset_or_file(value: str) -> str | ModelConfig:
    """A preset name as it is, or the :class:`ModelConfig` of a model-config file.

    A value ending in ``.json`` is the path or fsspec URL of a file holding
    ``ModelConfig.to_dict()`` (a size that is not in the table); any other value is returned
    for the caller to check as a preset name. A file that is not a model config raises
    ``ValueError`` naming it.
    """
    if not value.endswith(".json"):
        return value
    try:
        return ModelConfig.from_dict(json.loads(read_bytes(value)))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{value} is not a model config (ModelConfig.to_dict()): {err}") from err


def preset_label(value: str) -> str:
    """The name a preset or model-config file gives its models: ``tiny``, or ``micro`` for
    ``…/micro.json``."""
    return value.rsplit("/", 1)[-1].removesuffix(".json")


def describe_presets() -> str:
    """A text table of every preset: widths, depths, tokens and parameter counts."""
    lines = [
        f"{'preset':<6}  {'image (w x d, tokens)':<22}  {'spectrum (w x d, tokens)':<25}  "
        f"{'embed':>5}  {'params':>9}  hardware"
    ]
    for p in PRESETS.values():
        im, sp = p.model.image, p.model.spectrum
        lines.append(
            f"{p.name:<6}  {f'{im.width} x {im.depth}, {im.n_tokens}':<22}  "
            f"{f'{sp.width} x {sp.depth}, {sp.n_slices + 1}':<25}  "
            f"{p.model.head.embed_dim:>5}  {p.expected_params_m:>8.2f}M  {p.hardware}"
        )
    return "\n".join(lines)
