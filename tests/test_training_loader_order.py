"""The default loader mode yields the batches the loader yielded before streaming existed.

``tests/data/loader_batches_d7a346e.json`` holds what ``PairsLoader`` (block shuffle over whole
files) produced at commit d7a346e: the targetids of every batch, in yielded order, over a fixed
synthetic pairs folder, and the epoch order of an index the size of the default sky. The
default ``shuffle_unit='file'`` must reproduce them exactly, so that the default training run
sees the same batches (and ends with the same weights) as before.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pairs_fixture import write_pairs_dir

from astroclip_core.training.data import PairsIndex, PairsLoader, build_index, file_epoch_order

GOLDEN = json.loads((Path(__file__).parent / "data" / "loader_batches_d7a346e.json").read_text())


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> PairsIndex:
    root = tmp_path_factory.mktemp("pairs")
    return build_index(write_pairs_dir(root, 100, pixels=(11, 12, 13)))


@pytest.mark.parametrize("case", GOLDEN["loader"], ids=lambda c: json.dumps(c["kwargs"]))
@pytest.mark.parametrize("cache_max_bytes", [4 * 2**30, 0], ids=["cached", "uncached"])
@pytest.mark.parametrize("prefetch_batches", [0, 3], ids=["sync", "prefetch"])
def test_default_mode_yields_the_recorded_batches(
    index, case, cache_max_bytes, prefetch_batches
) -> None:
    assert index.n_rows == (80, 78, 80)  # the fixture the batches were recorded on
    loader = PairsLoader(
        index, cache_max_bytes=cache_max_bytes, prefetch_batches=prefetch_batches, **case["kwargs"]
    )
    for epoch, expected in case["epochs"].items():
        got = [b.targetid.tolist() for b in loader.iter_epoch(int(epoch))]
        assert got == expected


@pytest.mark.parametrize("case", GOLDEN["order"], ids=lambda c: f"epoch{c['epoch']}")
def test_file_epoch_order_is_the_recorded_one(case) -> None:
    n = len(case["file"])
    files, rows = file_epoch_order(
        np.array(case["n_rows"]), case["seed"], case["epoch"], case["shuffle_window_rows"]
    )
    assert len(files) == sum(case["n_rows"])
    assert files[:n].tolist() == case["file"]
    assert rows[:n].tolist() == case["row"]
