"""build_hf_dataset: shards + card from a tiny pairs table, loaded back offline with ``datasets``."""

from __future__ import annotations

import re
from pathlib import Path

import datasets
import fsspec
import huggingface_hub
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from pairs_factory import make_pairs, write_pairs

from astroclip_core.formats import FormatError
from astroclip_core.formats.desi import WAVELENGTH
from astroclip_core.fsio import atomic_write_parquet
from astroclip_core.publish import dataset as publish_dataset
from astroclip_core.publish.dataset import build_hf_dataset
from astroclip_core.publish.features import hf_features
from astroclip_core.publish.info import HfDatasetInfo, shard_name
from astroclip_core.releases import Release
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.pairs import list_pairs_files
from astroclip_core.tables.schemas import decode_blob
from astroclip_core.tables.splits import split_of

RELEASE = "edr"
EDR = Release(RELEASE, "fuji")
ROWS = {100: 8, 101: 7, 2000: 9}  # 24 pairs over three nside-16 pixels
ROWS_PER_SHARD = 5


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, HfDatasetInfo]:
    root = str(tmp_path_factory.mktemp("root"))
    pairs = write_pairs(root, RELEASE, ROWS)
    layout = StorageLayout(root)
    info = build_hf_dataset(
        layout.pairs_dir(RELEASE), layout.hf_dir(RELEASE), EDR, rows_per_shard=ROWS_PER_SHARD
    )
    return pairs, info


def _card_yaml(out_dir: str) -> dict:
    text = Path(out_dir, "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def _load_offline(
    out_dir: str, cache_dir: str, monkeypatch: pytest.MonkeyPatch
) -> datasets.DatasetDict:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Both libraries read the variables at import time, so set their constants too.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return datasets.load_dataset(out_dir, cache_dir=cache_dir)


def test_shards_are_named_and_counted_per_split(built: tuple[pa.Table, HfDatasetInfo]) -> None:
    pairs, info = built
    expected = split_of(pairs.column("targetid").to_numpy())
    for split in ("train", "test"):
        n = int(np.count_nonzero(expected == split))
        stats = info.split(split)
        assert stats.num_examples == n
        assert stats.num_shards == -(-n // ROWS_PER_SHARD)
        names = [f for f in info.files if f.startswith(f"data/{split}-")]
        assert names == [shard_name(split, i, stats.num_shards) for i in range(stats.num_shards)]
    assert info.files[-1] == "README.md"
    assert info.specprod == "fuji"


def test_loads_offline_with_typed_features_and_equal_rows(
    built: tuple[pa.Table, HfDatasetInfo], tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pairs, info = built
    ds = _load_offline(info.out_dir, str(tmp_path / "cache"), monkeypatch)
    assert set(ds) == {"train", "test"}
    assert ds["train"].features == hf_features()
    assert ds["train"].features["image"] == datasets.Array3D(shape=(3, 152, 152), dtype="float32")
    assert ds["train"].features["flux"] == datasets.List(datasets.Value("float32"), length=7781)

    expected_split = split_of(pairs.column("targetid").to_numpy())
    all_ids = pairs.column("targetid").to_numpy()
    for split in ("train", "test"):
        loaded = ds[split].data.table  # Arrow table behind the dataset
        assert sorted(loaded.column("targetid").to_pylist()) == sorted(
            all_ids[expected_split == split].tolist()
        )
        assert set(loaded.column("split").to_pylist()) == {split}
        assert loaded.schema.field("mask").type == pa.list_(pa.uint8(), 7781)

    # Arrays equal the pairs' decoded blobs for rows from both splits.
    row_of = {tid: i for i, tid in enumerate(all_ids.tolist())}
    for split in ("train", "test"):
        rows = ds[split].with_format("numpy")[:3]
        for k, tid in enumerate(rows["targetid"].tolist()):
            i = row_of[tid]
            for column in ("image", "flux", "ivar", "mask"):
                want = decode_blob(column, pairs.column(column).slice(i, 1))[0]
                got = rows[column][k]
                assert got.shape == want.shape
                np.testing.assert_array_equal(got.astype(want.dtype), want)
            assert rows["z"][k] == pairs.column("z")[i].as_py()


def test_card_yaml_matches_the_build(built: tuple[pa.Table, HfDatasetInfo]) -> None:
    _pairs, info = built
    card = _card_yaml(info.out_dir)
    assert card["configs"] == [
        {
            "config_name": "default",
            "data_files": [
                {"split": "train", "path": "data/train-*"},
                {"split": "test", "path": "data/test-*"},
            ],
        }
    ]
    splits = {s["name"]: s["num_examples"] for s in card["dataset_info"]["splits"]}
    assert splits == {
        "train": info.split("train").num_examples,
        "test": info.split("test").num_examples,
    }
    assert card["dataset_info"]["download_size"] == info.download_size_bytes
    features = {f["name"]: f for f in card["dataset_info"]["features"]}
    assert features["image"]["dtype"] == {"array3_d": {"shape": [3, 152, 152], "dtype": "float32"}}
    assert features["targetid"]["dtype"] == "int64"
    assert card["license"] == "cc-by-4.0"
    assert "astronomy" in card["tags"] and card["task_categories"]


def test_card_prose_states_grid_units_split_and_provenance(
    built: tuple[pa.Table, HfDatasetInfo],
) -> None:
    _pairs, info = built
    text = Path(info.out_dir, "README.md").read_text(encoding="utf-8")
    assert f"{WAVELENGTH[0]:.1f}–{WAVELENGTH[-1]:.1f} Å" in text
    assert "7781 pixels" in text and "0.8 Å" in text
    assert "1e-17 erg/s/cm2/Angstrom" in text and "nanomaggy" in text and "0.262″" in text
    assert "TARGETID" in text and "20% test" in text
    assert "`edr`" in text and "`fuji`" in text
    assert "load_dataset(" in text


def test_shards_keep_features_for_plain_parquet_readers(
    built: tuple[pa.Table, HfDatasetInfo],
) -> None:
    _pairs, info = built
    schema = pq.read_schema(f"{info.out_dir}/{info.files[0]}")
    assert datasets.Features.from_arrow_schema(schema) == hf_features()


def test_rebuild_replaces_and_never_duplicates(tmp_path) -> None:
    root = str(tmp_path)
    layout = StorageLayout(root)
    write_pairs(root, RELEASE, {7: 12})
    out = layout.hf_dir(RELEASE)
    first = build_hf_dataset(layout.pairs_dir(RELEASE), out, EDR, rows_per_shard=2)
    second = build_hf_dataset(layout.pairs_dir(RELEASE), out, EDR, rows_per_shard=50)
    assert first.split("train").num_shards > 1
    on_disk = sorted(p.name for p in (tmp_path / "hf" / RELEASE / "data").iterdir())
    assert on_disk == sorted(f.removeprefix("data/") for f in second.files[:-1])
    assert [p.name for p in (tmp_path / "hf").iterdir()] == [RELEASE]  # no temp folders left


def test_builds_between_fsspec_urls(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    root = "memory://publish-test"
    write_pairs(root, RELEASE, {5: 6, 9: 5})
    layout = StorageLayout(root)
    out = layout.hf_dir(RELEASE)
    build_hf_dataset(layout.pairs_dir(RELEASE), out, EDR, rows_per_shard=2)
    info = build_hf_dataset(layout.pairs_dir(RELEASE), out, EDR, rows_per_shard=4)
    fs = fsspec.filesystem("memory")
    listed = sorted(p.rsplit("/", 1)[-1] for p in fs.glob("/publish-test/hf/edr/data/*.parquet"))
    assert listed == sorted(f.removeprefix("data/") for f in info.files[:-1])
    assert fs.exists("/publish-test/hf/edr/README.md")
    assert info.num_examples == 11
    fs.rm("/publish-test", recursive=True)


def test_bad_inputs_raise_clear_errors(tmp_path) -> None:
    root = str(tmp_path)
    layout = StorageLayout(root)
    with pytest.raises(FileNotFoundError, match="no pairs files"):
        build_hf_dataset(layout.pairs_dir(RELEASE), layout.hf_dir(RELEASE), EDR)
    bad = make_pairs(3, 4).drop_columns(["flux"])
    atomic_write_parquet(layout.pairs_file(RELEASE, 4), bad)
    with pytest.raises(
        FormatError, match=re.escape(f"{layout.pairs_file(RELEASE, 4)}: pairs file lacks column")
    ):
        build_hf_dataset(layout.pairs_dir(RELEASE), layout.hf_dir(RELEASE), EDR)
    atomic_write_parquet(layout.pairs_file(RELEASE, 4), make_pairs(3, 4))
    atomic_write_parquet(layout.pairs_file(RELEASE, 8), make_pairs(3, 8))  # same TARGETIDs
    with pytest.raises(ValueError, match="appears more than once"):
        build_hf_dataset(layout.pairs_dir(RELEASE), layout.hf_dir(RELEASE), EDR)
    atomic_write_parquet(layout.pairs_file(RELEASE, 8), make_pairs(3, 9, first_targetid=1))
    with pytest.raises(FormatError, match="healpix column 9 in the folder of pixel 8"):
        build_hf_dataset(layout.pairs_dir(RELEASE), layout.hf_dir(RELEASE), EDR)
    with pytest.raises(ValueError, match="rows_per_shard"):
        build_hf_dataset(layout.pairs_dir(RELEASE), layout.hf_dir(RELEASE), EDR, rows_per_shard=0)
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").iterdir())
    assert [p for p, _ in list_pairs_files(layout.pairs_dir(RELEASE))] == [4, 8]


def test_small_read_batches_give_the_same_shards(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = str(tmp_path)
    layout = StorageLayout(root)
    write_pairs(root, RELEASE, {11: 7, 12: 6})
    whole = build_hf_dataset(layout.pairs_dir(RELEASE), f"{root}/whole", EDR, rows_per_shard=4)
    monkeypatch.setattr(publish_dataset, "READ_BATCH_ROWS", 3)
    batched = build_hf_dataset(layout.pairs_dir(RELEASE), f"{root}/batched", EDR, rows_per_shard=4)
    assert batched.files == whole.files
    for name in whole.files[:-1]:
        assert pq.read_table(f"{root}/batched/{name}").equals(pq.read_table(f"{root}/whole/{name}"))


def test_a_column_of_the_wrong_type_is_named(tmp_path) -> None:
    layout = StorageLayout(str(tmp_path))
    table = make_pairs(2, 4)
    table = table.set_column(
        table.schema.get_field_index("z"), "z", table.column("z").cast(pa.float32())
    )
    atomic_write_parquet(layout.pairs_file(RELEASE, 4), table)
    with pytest.raises(FormatError, match="column 'z' has type float, expected double"):
        build_hf_dataset(layout.pairs_dir(RELEASE), layout.hf_dir(RELEASE), EDR)


def test_an_empty_split_is_left_out_and_the_rest_loads(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = str(tmp_path)
    layout = StorageLayout(root)
    pairs = make_pairs(12, 21)
    train_only = pairs.filter(pa.array(split_of(pairs.column("targetid").to_numpy()) == "train"))
    atomic_write_parquet(layout.pairs_file(RELEASE, 21), train_only)
    info = build_hf_dataset(layout.pairs_dir(RELEASE), layout.hf_dir(RELEASE), EDR)
    assert info.split("test").num_examples == 0 and info.split("test").num_shards == 0
    assert not any(f.startswith("data/test-") for f in info.files)
    assert [c["split"] for c in _card_yaml(info.out_dir)["configs"][0]["data_files"]] == ["train"]
    ds = _load_offline(info.out_dir, str(tmp_path / "cache"), monkeypatch)
    assert list(ds) == ["train"] and ds["train"].num_rows == train_only.num_rows
