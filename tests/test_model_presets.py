"""The preset table: built parameter counts match it, and configs round-trip."""

from __future__ import annotations

import pytest

from astroclip_core.model.clip import build_model, count_parameters
from astroclip_core.model.config import PRESETS, ModelConfig, describe_presets, get_preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_built_parameter_count_matches_table(name: str) -> None:
    counts = count_parameters(name)
    expected = PRESETS[name].expected_params_m * 1e6
    assert abs(counts.total - expected) / expected < 0.01
    assert counts.total == counts.image + counts.spectrum + counts.heads


def test_meta_count_equals_real_build_for_tiny() -> None:
    real = build_model("tiny")
    assert real.param_counts() == count_parameters("tiny")


def test_paper_preset_has_astroclip_scale() -> None:
    counts = count_parameters("paper")
    assert 295e6 < counts.image < 310e6  # ViT-L/12: ~302M
    assert 40e6 < counts.spectrum < 46e6  # published spectrum transformer: 43M
    assert get_preset("paper").model.head.embed_dim == 1024


def test_describe_presets_lists_every_preset_and_count() -> None:
    text = describe_presets()
    for preset in PRESETS.values():
        assert preset.name in text
        assert f"{preset.expected_params_m:.2f}M" in text


def test_model_config_round_trips_through_dict() -> None:
    config = get_preset("base").model
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="tiny"):
        get_preset("huge")


def test_tiny_token_counts() -> None:
    tiny = get_preset("tiny").model
    assert tiny.image.n_tokens == 36
    assert tiny.spectrum.n_slices == (tiny.spectrum.padded_length - 120) // 60 + 1
    assert tiny.spectrum.padded_length >= 7781
