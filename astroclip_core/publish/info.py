"""What a build of the Hugging Face dataset wrote: typed values shared by the builder and the card."""

from __future__ import annotations

from dataclasses import dataclass

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
