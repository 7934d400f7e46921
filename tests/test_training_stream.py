"""The streaming loader: row-group shuffle, bounded memory, prefetch, resume, DDP shards, and
the published dataset's shards as a source."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pairs_factory import write_pairs
from pairs_fixture import micro_model_config, write_pairs_dir

from astroclip_core.formats import FormatError
from astroclip_core.publish.dataset import build_hf_dataset
from astroclip_core.publish.info import list_shards
from astroclip_core.releases import Release
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.pairs import count_split_rows, read_pairs_file
from astroclip_core.tables.schemas import decode_array_column
from astroclip_core.tables.splits import split_of
from astroclip_core.training.config import TrainConfig
from astroclip_core.training.data import PairsLoader, build_index, source_files
from astroclip_core.training.runs import run_key
from astroclip_core.training.train import main

RG = 8  # rows per row group of the fixture files


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("pairs")
    return write_pairs_dir(root, 60, pixels=(11, 12, 13), row_group_rows=RG)


@pytest.fixture(scope="module")
def more_files(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("pairs6")
    return write_pairs_dir(root, 60, pixels=(11, 12, 13, 14, 15, 16), row_group_rows=RG)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> tuple[str, str]:
    """(pairs folder, published dataset folder) of 3 pixels, 4 train shards or more."""
    root = str(tmp_path_factory.mktemp("root"))
    write_pairs(root, "edr", {100: 30, 101: 25, 2000: 35})
    layout = StorageLayout(root)
    build_hf_dataset(
        layout.pairs_dir("edr"), layout.hf_dir("edr"), Release("edr", "fuji"), rows_per_shard=20
    )
    return layout.pairs_dir("edr"), layout.hf_dir("edr")


def _ids(batches) -> list[list[int]]:
    return [b.targetid.tolist() for b in batches]


def _train_ids(files: list[str]) -> set[int]:
    return {int(t) for f in files for t in read_pairs_file(f, "train").targetid}


def test_count_split_rows_counts_each_row_group(files) -> None:
    rows, in_split = count_split_rows(files[0], "train")
    assert rows.tolist() == [RG] * 7 + [4]
    targetid = read_pairs_file(files[0]).targetid  # all 60 rows, file order
    expected = [int(np.sum(split_of(targetid[i : i + RG]) == "train")) for i in range(0, 60, RG)]
    assert in_split.tolist() == expected


def test_row_group_epoch_visits_each_row_once_and_mixes_files(files) -> None:
    index = build_index(files)
    loader = PairsLoader(index, 8, seed=0, shuffle_window_rows=24, shuffle_unit="row_group")
    batches = list(loader.iter_epoch(0))
    seen = np.concatenate([b.targetid for b in batches])
    assert len(batches) == loader.batches_per_epoch == index.total_rows // 8
    assert len(np.unique(seen)) == len(seen) and set(seen.tolist()) <= _train_ids(files)
    file_of = {int(t): i for i, f in enumerate(files) for t in read_pairs_file(f).targetid}
    mixed = [len({file_of[int(t)] for t in b.targetid}) > 1 for b in batches]
    assert sum(mixed) > len(batches) / 2  # a window holds row groups of several files


def test_row_group_mode_memory_does_not_grow_with_the_data(files, more_files) -> None:
    peaks = []
    for f in (files, more_files):
        loader = PairsLoader(
            build_index(f),
            4,
            seed=1,
            shuffle_window_rows=12,
            cache_max_bytes=0,
            shuffle_unit="row_group",
        )
        assert not loader.keep_all
        for _ in loader.iter_epoch(0):
            pass
        peaks.append(loader.peak_resident_rows)
    # about two windows of 12 split rows (a batch straddles at most two), twice the data or not
    assert peaks[0] >= 12 and peaks[1] <= peaks[0] + 2 * RG
    assert peaks[1] < sum(build_index(more_files).n_file_rows) / 4
    # The whole-file mode holds whole files, so it needs at least one file's rows.
    whole = PairsLoader(build_index(more_files), 4, seed=1, cache_max_bytes=0)
    next(iter(whole.iter_epoch(0)))
    assert whole.peak_resident_rows >= 60


def test_small_sets_stay_cached_across_epochs(files) -> None:
    loader = PairsLoader(build_index(files), 8, seed=0, shuffle_unit="row_group")
    assert loader.keep_all
    first = _ids(loader.iter_epoch(0))
    assert len(loader._cache) == len(loader.units.rows)  # every row group read once, kept
    assert _ids(loader.iter_epoch(0)) == first


@pytest.mark.parametrize("unit", ["file", "row_group"])
@pytest.mark.parametrize("prefetch", [0, 2])
def test_resuming_mid_epoch_yields_the_remaining_batches(files, unit, prefetch) -> None:
    index = build_index(files)
    kw = dict(shuffle_window_rows=20, shuffle_unit=unit, prefetch_batches=prefetch)
    loader = PairsLoader(index, 8, seed=7, cache_max_bytes=0, **kw)
    per_epoch = loader.batches_per_epoch
    stream = loader.iter_from(0)
    full = [next(stream) for _ in range(2 * per_epoch + 2)]
    stream.close()
    for step in (3, per_epoch - 1, per_epoch + 2):
        # a new loader, as in a restarted process
        resumed = PairsLoader(build_index(files), 8, seed=7, cache_max_bytes=0, **kw)
        tail = resumed.iter_from(step)
        for expected in full[step:]:
            got = next(tail)
            assert got.targetid.tolist() == expected.targetid.tolist()
            assert np.array_equal(got.image, expected.image)
            assert np.array_equal(got.flux, expected.flux)
        tail.close()
    epoch1 = _ids(loader.iter_epoch(1, start_batch=2))
    assert epoch1 == _ids(full[per_epoch + 2 : 2 * per_epoch])


@pytest.mark.parametrize("unit", ["file", "row_group"])
def test_batches_are_fixed_by_seed_epoch_and_rank(files, unit) -> None:
    index = build_index(files)

    def epoch(seed: int, e: int, rank: int = 0) -> list[list[int]]:
        loader = PairsLoader(
            index, 8, seed=seed, rank=rank, world_size=2, shuffle_window_rows=20, shuffle_unit=unit
        )
        return _ids(loader.iter_epoch(e))

    assert epoch(0, 0) == epoch(0, 0)
    assert epoch(0, 0) != epoch(0, 1)
    assert epoch(0, 0) != epoch(1, 0)
    assert epoch(0, 0, rank=0) != epoch(0, 0, rank=1)


@pytest.mark.parametrize("unit", ["file", "row_group"])
def test_ddp_ranks_get_disjoint_shards_without_repeats(files, unit) -> None:
    index = build_index(files)
    ranks = [
        PairsLoader(
            index, 8, seed=2, rank=r, world_size=2, shuffle_window_rows=20, shuffle_unit=unit
        )
        for r in (0, 1)
    ]
    assert ranks[0].batches_per_epoch == ranks[1].batches_per_epoch >= 6
    train = _train_ids(files)
    for e in (0, 1):
        seen = [np.concatenate([b.targetid for b in r.iter_epoch(e)]) for r in ranks]
        for ids in seen:
            assert len(ids) == ranks[0].batches_per_epoch * 8
            assert len(np.unique(ids)) == len(ids)  # no repeat within the epoch
        assert not set(seen[0].tolist()) & set(seen[1].tolist())
        assert set(seen[0].tolist()) | set(seen[1].tolist()) <= train
    if unit == "row_group":  # each rank reads only its own row groups
        plans = [set(r.epoch_plan(0).unit.ravel().tolist()) for r in ranks]
        assert plans[0] and plans[1] and not plans[0] & plans[1]


def test_a_bad_file_raises_in_the_caller_through_the_prefetch_thread(tmp_path) -> None:
    files = write_pairs_dir(tmp_path, 40, pixels=(11, 12), row_group_rows=RG)
    loader = PairsLoader(build_index(files), 8, seed=0, prefetch_batches=2, cache_max_bytes=0)
    Path(files[1]).write_bytes(Path(files[1]).read_bytes()[:5000])  # truncated after indexing
    with pytest.raises(FormatError, match="healpix=12"):
        for _ in loader.iter_epoch(0):
            pass


def test_closing_a_stream_stops_its_thread(files) -> None:
    def threads() -> int:
        return sum(t.name == "pairs-loader-prefetch" for t in threading.enumerate())

    before = threads()
    stream = PairsLoader(build_index(files), 8, seed=0, prefetch_batches=2).iter_from(0)
    next(stream)
    assert threads() == before + 1
    stream.close()
    assert threads() == before


def test_published_shards_decode_to_the_pairs(hf_dir) -> None:
    pairs_dir, out_dir = hf_dir
    config = TrainConfig(out_dir="unused", hf_dir=out_dir)
    shards = source_files(config)
    assert shards == list_shards(out_dir, "train") and len(shards) >= 3
    assert all("/data/train-" in s for s in shards)
    by_id = {}
    for f in source_files(TrainConfig(out_dir="unused", pairs_dir=pairs_dir)):
        arrays = read_pairs_file(f, "train")
        by_id.update({int(t): (arrays, i) for i, t in enumerate(arrays.targetid)})
    index = build_index(shards)
    assert index.total_rows == len(by_id)
    loader = PairsLoader(index, 8, seed=0, shuffle_unit="row_group", shuffle_window_rows=16)
    seen = 0
    for batch in loader.iter_epoch(0):
        for j, t in enumerate(batch.targetid):
            arrays, i = by_id[int(t)]
            assert np.array_equal(batch.image[j], arrays.image[i])
            assert np.array_equal(batch.ivar[j], arrays.ivar[i])
            assert np.array_equal(batch.mask[j], arrays.mask[i])
            assert batch.z[j] == arrays.z[i]
            seen += 1
    assert seen == loader.batches_per_epoch * 8 >= 48


def test_list_shards_refuses_an_incomplete_set(hf_dir, tmp_path) -> None:
    _, out_dir = hf_dir
    shards = list_shards(out_dir, "train")
    copy = tmp_path / "copy" / "data"
    copy.mkdir(parents=True)
    for s in shards[1:]:  # shard 0 missing
        (copy / Path(s).name).write_bytes(Path(s).read_bytes())
    with pytest.raises(ValueError, match="not one complete set"):
        list_shards(str(tmp_path / "copy"), "train")
    with pytest.raises(FileNotFoundError, match="no test shards"):
        list_shards(str(tmp_path / "copy"), "test")


def test_typed_list_columns_must_have_the_blob_shape() -> None:
    good = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(2 * 7781, np.float32)), 7781)
    assert decode_array_column("flux", good).shape == (2, 7781)
    assert decode_array_column("flux", good.slice(1)).shape == (1, 7781)
    ragged = pa.ListArray.from_arrays(
        pa.array([0, 7781, 7790], pa.int32()), pa.array(np.zeros(7790, np.float32))
    )
    with pytest.raises(ValueError, match="not all of 7781"):
        decode_array_column("flux", ragged)
    wrong = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(7781, np.float64)), 7781)
    with pytest.raises(ValueError, match="double values"):
        decode_array_column("flux", wrong)


def test_train_config_names_one_source_and_a_known_shuffle(tmp_path) -> None:
    with pytest.raises(ValueError, match="exactly one of pairs_dir, hf_dir and files"):
        TrainConfig(out_dir="x", pairs_dir="a", hf_dir="b")
    with pytest.raises(ValueError, match="shuffle_unit"):
        TrainConfig(out_dir="x", pairs_dir="a", shuffle_unit="rows")  # type: ignore[arg-type]
    base = TrainConfig(out_dir="x", pairs_dir="a")
    key = run_key(base, [])
    assert run_key(replace(base, prefetch_batches=0), []) == key  # does not change the result
    assert run_key(replace(base, shuffle_unit="row_group"), []) != key


def test_training_runs_on_the_published_shards(hf_dir, tmp_path) -> None:
    _, out_dir = hf_dir
    config = TrainConfig(
        out_dir=str(tmp_path / "run"),
        model=micro_model_config(),
        hf_dir=out_dir,
        shuffle_unit="row_group",
        shuffle_window_rows=16,
        steps=3,
        batch_size=8,
        warmup_steps=1,
        log_every=1,
        num_threads=1,
        device="cpu",
    )
    result = main(config)
    assert result.steps == 3 and np.isfinite(result.final_loss)
    assert Path(result.paths["model"]).stat().st_size > 0
