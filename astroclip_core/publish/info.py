"""What a build of the Hugging Face dataset wrote: typed values shared by the builder and the card,
and the shard names (:func:`shard_name` builds one, :func:`list_shards` finds them all)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from astroclip_core import fsio

SPLITS: tuple[str, ...] = ("train", "test")
CARD_NAME = "README.md"
DATA_FOLDER = "data"


def shard_name(split: str, index: int, count: int) -> str:
    """Relative path of shard ``index`` of ``count`` of ``split``: ``data/train-00000-of-00004.parquet``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} out of range for {count} shards")
    return f"{DATA_FOLDER}/{split}-{index:05d}-of-{count:05d}.parquet"


def list_shards(out_dir: str, split: str) -> list[str]:
    """URLs of every shard of ``split`` in the dataset folder ``out_dir``, in shard order.

    The inverse of :func:`shard_name`: raises FileNotFoundError when the folder holds no shard
    of ``split``, ValueError when the shards found are not exactly ``0..count-1 of count``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    fs, root = fsio.filesystem(out_dir)
    pattern = f"{root.rstrip('/')}/{DATA_FOLDER}/{split}-*-of-*.parquet"
    found = {}
    for path in fs.glob(pattern):
        match = re.fullmatch(rf"{split}-(\d{{5}})-of-(\d{{5}})\.parquet", path.rsplit("/", 1)[-1])
        if match:
            found[(int(match[1]), int(match[2]))] = path
    if not found:
        raise FileNotFoundError(f"no {split} shards under {out_dir.rstrip('/')}/{DATA_FOLDER}")
    counts = {count for _, count in found}
    count = counts.pop()
    if counts or sorted(i for i, _ in found) != list(range(count)):
        names = sorted(p.rsplit("/", 1)[-1] for p in found.values())
        raise ValueError(f"{out_dir}: {split} shards are not one complete set: {names}")
    base = out_dir.rstrip("/")
    return [f"{base}/{shard_name(split, i, count)}" for i in range(count)]


@dataclass(frozen=True)
class SplitStats:
    """One split of the built dataset.

    ``num_bytes`` is the in-memory Arrow size (what ``datasets`` calls the split's num_bytes);
    ``parquet_bytes`` the size of its Parquet shards on disk.
    """

    name: str
    num_examples: int
    num_shards: int
    num_bytes: int
    parquet_bytes: int


@dataclass(frozen=True)
class HfDatasetInfo:
    """Result of :func:`astroclip_core.publish.dataset.build_hf_dataset`.

    ``files`` are paths relative to ``out_dir`` (shards then the card), in write order.
    """

    out_dir: str
    release: str
    specprod: str
    test_fraction: float
    splits: tuple[SplitStats, ...]
    files: tuple[str, ...]

    def split(self, name: str) -> SplitStats:
        """The stats of split ``name`` ('train' or 'test')."""
        for stats in self.splits:
            if stats.name == name:
                return stats
        raise KeyError(f"no split {name!r} in {[s.name for s in self.splits]}")

    @property
    def num_examples(self) -> int:
        """Rows over all splits."""
        return sum(s.num_examples for s in self.splits)

    @property
    def dataset_size_bytes(self) -> int:
        """In-memory Arrow size over all splits (the card's ``dataset_size``)."""
        return sum(s.num_bytes for s in self.splits)

    @property
    def download_size_bytes(self) -> int:
        """Parquet bytes over all splits (the card's ``download_size``)."""
        return sum(s.parquet_bytes for s in self.splits)
