"""The contrastive image-spectrum model and its construction from a config or preset."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from astroclip_core.model.blocks import init_weights
from astroclip_core.model.config import ModelConfig, get_preset
from astroclip_core.model.heads import CrossAttentionHead, ScanViewHead
from astroclip_core.model.image import ImageEncoder
from astroclip_core.model.linescan import N_CHANNELS
from astroclip_core.model.loss import ContrastiveLoss, LossTerms, info_nce
from astroclip_core.model.spectrum import SpectrumEncoder


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of the model's parts (the loss's learnable scale and the training-only
    scan-view head count in heads)."""

    image: int
    spectrum: int
    heads: int

    @property
    def total(self) -> int:
        """All parameters."""
        return self.image + self.spectrum + self.heads


class AstroClipModel(nn.Module):
    """Image and spectrum encoders, one cross-attention head each, and the contrastive loss.

    ``encode_image`` takes (B, 3, H, W) g,r,z nanomaggies (H = W >= crop, centre-cropped);
    ``encode_spectrum`` takes (B, 7781) flux and a (B, 7781) bool ``valid`` mask. Both return
    L2-normalised (B, embed_dim) embeddings; ``forward`` returns :class:`LossTerms`.

    With ``config.scan_view.weight`` > 0 the model also owns a :class:`ScanViewHead`, and
    ``forward`` takes ``view_flux``: the same spectra under another noise draw, whose line scan
    is the second view of each spectrum (see :class:`~astroclip_core.model.config.ScanViewConfig`).

    Under DDP ``forward`` is a collective: both loss terms contrast this rank's rows against the
    global batch (:mod:`astroclip_core.model.loss`).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = ImageEncoder(config.image)
        self.spectrum_encoder = SpectrumEncoder(config.spectrum)
        self.image_head = CrossAttentionHead(config.image.width, config.head)
        self.spectrum_head = CrossAttentionHead(config.spectrum.width, config.head)
        self.loss = ContrastiveLoss(config.loss)
        self.scan_view_head = None
        if config.scan_view.weight > 0:
            n_scan = config.spectrum.line_scan_n_z * N_CHANNELS
            self.scan_view_head = ScanViewHead(
                n_scan, config.scan_view.hidden, config.head.embed_dim
            )
        self.image_encoder.apply(init_weights)
        self.spectrum_encoder.apply(init_weights)

    def image_features(self, image_nmgy: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D) un-normalised image embedding."""
        return self.image_head(self.image_encoder(image_nmgy))

    def spectrum_features(
        self, flux: torch.Tensor, valid: torch.Tensor, ivar: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L), (B, L) [, (B, L) ivar] -> (B, D) un-normalised spectrum embedding."""
        return self.spectrum_head(self.spectrum_encoder(flux, valid, ivar))

    def encode_image(self, image_nmgy: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D) L2-normalised."""
        return F.normalize(self.image_features(image_nmgy).float(), dim=-1)

    def encode_spectrum(
        self, flux: torch.Tensor, valid: torch.Tensor, ivar: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L), (B, L) [, (B, L) ivar] -> (B, D) L2-normalised. ``ivar`` is needed when
        the encoder weighs pixels by it (``SpectrumEncoderConfig.pixel_weight="ivar"``)."""
        return F.normalize(self.spectrum_features(flux, valid, ivar).float(), dim=-1)

    def forward(
        self,
        image_nmgy: torch.Tensor,
        flux: torch.Tensor,
        valid: torch.Tensor,
        view_flux: torch.Tensor | None = None,
        ivar: torch.Tensor | None = None,
    ) -> LossTerms:
        """Loss terms of one batch of pairs (row i of each input is the same galaxy).

        ``view_flux`` (B, L) is required when the scan view is on, and ignored otherwise;
        ``ivar`` (B, L) when the spectrum encoder weighs pixels by it.
        """
        spectrum = self.spectrum_features(flux, valid, ivar)
        terms = self.loss(self.image_features(image_nmgy), spectrum)
        if self.scan_view_head is None:
            return terms
        if view_flux is None or view_flux.shape != flux.shape:
            raise ValueError(
                f"the scan view needs view_flux shaped like flux {tuple(flux.shape)}, got "
                f"{None if view_flux is None else tuple(view_flux.shape)}"
            )
        scan = self.spectrum_encoder.line_scan(view_flux, valid, ivar)  # (B, n_z * C), fixed
        view = self.scan_view_head(scan)
        # The view term uses the image-spectrum logit scale (detached in LossTerms): only the
        # image-spectrum term trains the scale. Under DDP info_nce all-gathers both (B, D)
        # inputs too, so the view's negatives also span the global batch.
        with torch.autocast(device_type=view.device.type, enabled=False):
            loss_view = info_nce(spectrum.float(), view.float(), terms.logit_scale)
        return replace(
            terms, loss=terms.loss + self.config.scan_view.weight * loss_view, loss_view=loss_view
        )

    @classmethod
    def from_pretrained(
        cls,
        source: str,
        device: str | torch.device = "cpu",
        revision: str | None = None,
        token: str | None = None,
        endpoint: str | None = None,
        cache_dir: str | None = None,
    ) -> AstroClipModel:
        """The trained model in a folder (local or fsspec URL), an old ``model.pt``, or a
        Hugging Face Hub model repo ``owner/name``, in eval mode on ``device``.

        See :func:`astroclip_core.model.pretrained.load_pretrained`.
        """
        from astroclip_core.model.pretrained import load_pretrained

        return load_pretrained(source, device, revision, token, endpoint, cache_dir)

    def save_pretrained(
        self, folder: str, training: dict | None = None, extra: dict | None = None
    ) -> dict[str, str]:
        """Write ``model.safetensors`` and ``config.json`` (model config, ``training`` config
        and ``extra`` fields) into ``folder``; name -> URL of the files written.

        See :func:`astroclip_core.model.pretrained.save_pretrained`.
        """
        from astroclip_core.model.pretrained import save_pretrained

        return save_pretrained(self, folder, training, extra)

    def param_counts(self) -> ParamCounts:
        """Parameters per part."""
        image = sum(p.numel() for p in self.image_encoder.parameters())
        spectrum = sum(p.numel() for p in self.spectrum_encoder.parameters())
        heads = sum(
            p.numel()
            for m in (self.image_head, self.spectrum_head, self.loss, self.scan_view_head)
            if m is not None
            for p in m.parameters()
        )
        return ParamCounts(image=image, spectrum=spectrum, heads=heads)


def resolve_model_config(model: str | ModelConfig) -> ModelConfig:
    """A preset name or a ModelConfig -> the ModelConfig."""
    return get_preset(model).model if isinstance(model, str) else model


def build_model(model: str | ModelConfig, device: str | torch.device = "cpu") -> AstroClipModel:
    """Build a model from a preset name or config, initialised on ``device``.

    ``device='meta'`` builds only shapes (no memory), which is enough to count parameters.
    """
    with torch.device(device):
        return AstroClipModel(resolve_model_config(model))


def count_parameters(model: str | ModelConfig) -> ParamCounts:
    """Parameter counts of a preset/config, built on the meta device (instant, no memory)."""
    return build_model(model, device="meta").param_counts()
