"""Every Dagster config default is its library default, and each config builds the library's.

The library's dataclasses (and the step functions' parameters) are the one source of every
default; the Dagster configs, the runner and ``astroclip run`` read theirs from them.
"""

from __future__ import annotations

import inspect

import dagster as dg
import pytest

from astroclip_core.formats.desi import GalaxySelection
from astroclip_core.ingest.cutouts import fetch_partition_cutouts
from astroclip_core.ingest.imaging import fetch_partition_sources
from astroclip_core.ingest.match import match_partition_stage
from astroclip_core.sources.http import RetryPolicy
from astroclip_core.sources.legacysurvey import LegacySurveySource
from astroclip_core.storage import StorageLayout
from astroclip_core.training.config import TrainConfig
from pipelines.catalog import SelectionConfig
from pipelines.ingest import CrossmatchConfig, ImagingConfig
from pipelines.resources import LegacySurveySourceResource, RetrySettings
from pipelines.runner import RunOptions
from pipelines.training import TrainingConfig

# (Dagster config, where the library keeps its defaults, Dagster field -> library name,
#  fields only the orchestration has). A library source is an instance of the dataclass
#  (defaults as attributes) or the step function (defaults as parameters).
CASES: list[tuple[type[dg.Config], object, dict[str, str], set[str]]] = [
    (
        TrainingConfig,
        TrainConfig(out_dir="unused", files=()),
        {"preset": "model"},
        {"run", "fresh", "source", "nproc", "launch_prefix", "pipes_dir"},
    ),
    (SelectionConfig, GalaxySelection(), {}, set()),
    (RetrySettings, RetryPolicy(), {}, set()),
    (ImagingConfig, fetch_partition_sources, {}, set()),
    (CrossmatchConfig, match_partition_stage, {}, set()),
    # The URLs are empty to mean the sample sky, not the library's real archive.
    (
        LegacySurveySourceResource,
        LegacySurveySource(),
        {},
        {"sweep_root_url", "cutout_url", "max_concurrent_requests", "retry", "imaging"},
    ),
]


def test_the_imaging_default_is_the_cutouts_step_default() -> None:
    # ``imaging`` is a parameter of the cutouts step, not of the source.
    step = inspect.signature(fetch_partition_cutouts).parameters["imaging"].default
    assert LegacySurveySourceResource().imaging == step


def _library_default(source: object, name: str) -> object:
    if inspect.isfunction(source):
        default = inspect.signature(source).parameters[name].default
        assert default is not inspect.Parameter.empty, f"{source.__name__}({name}) has no default"
        return default
    return getattr(source, name)


@pytest.mark.parametrize(
    ("config", "library", "renamed", "own"), CASES, ids=[case[0].__name__ for case in CASES]
)
def test_every_dagster_default_is_the_library_default(config, library, renamed, own) -> None:
    defaults = config()
    compared = 0
    for name in type(defaults).model_fields:
        if name in own:
            continue
        expected = _library_default(library, renamed.get(name, name))
        assert getattr(defaults, name) == expected, f"{config.__name__}.{name}"
        compared += 1
    assert compared >= 1


def test_the_dagster_configs_build_the_library_objects(tmp_path) -> None:
    layout = StorageLayout(str(tmp_path))
    built = TrainingConfig().train_config(layout, "edr")
    assert built == TrainConfig(
        out_dir=layout.model_dir("edr", "tiny-v1"), pairs_dir=layout.pairs_dir("edr")
    )
    assert SelectionConfig().selection() == GalaxySelection()
    assert SelectionConfig(z_max=None).selection().z_max is None
    assert RetrySettings().policy() == RetryPolicy()
    assert RunOptions().training == TrainingConfig()


def test_the_default_run_trains_as_before() -> None:
    """``astroclip run`` trained tiny for 1700 steps of 64 at peak lr 5e-4 before the defaults
    moved into the library; the library's defaults keep that run unchanged, except that its
    precision is now ``auto`` (bf16 autocast where the CPU or GPU computes bf16 natively)."""
    run = TrainingConfig()
    assert (run.preset, run.steps, run.batch_size, run.lr) == ("tiny", 1700, 64, 5e-4)
    assert (run.device, run.precision, run.seed) == ("auto", "auto", 0)


def test_training_source_picks_the_pairs_or_the_published_shards() -> None:
    from astroclip_core.storage import StorageLayout
    from pipelines.training import TrainingConfig

    layout = StorageLayout("/data")
    pairs = TrainingConfig().train_config(layout, "edr")
    assert pairs.pairs_dir == layout.pairs_dir("edr") and pairs.hf_dir is None
    shards = TrainingConfig(source="hf", shuffle_unit="row_group").train_config(layout, "edr")
    assert shards.hf_dir == layout.hf_dir("edr") and shards.pairs_dir is None
    assert shards.shuffle_unit == "row_group"
    with pytest.raises(ValueError, match="source must be 'pairs' or 'hf', got 'web'"):
        TrainingConfig(source="web").train_config(layout, "edr")
