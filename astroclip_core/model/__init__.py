"""The contrastive model: encoders, heads, loss and presets (no training code here)."""

from astroclip_core.model.clip import AstroClipModel, ParamCounts, build_model, count_parameters
from astroclip_core.model.config import PRESETS, ModelConfig, Preset, describe_presets, get_preset
from astroclip_core.model.loss import ContrastiveLoss, LossTerms

__all__ = [
    "PRESETS",
    "AstroClipModel",
    "ContrastiveLoss",
    "LossTerms",
    "ModelConfig",
    "ParamCounts",
    "Preset",
    "build_model",
    "count_parameters",
    "describe_presets",
    "get_preset",
]
