"""Build the Hugging Face dataset of one release from its pairs table.

Layout written under ``out_dir`` (normally ``StorageLayout.hf_dir(release)``)::

    README.md                                  dataset card (YAML configs + dataset_info, prose)
    data/train-00000-of-000NN.parquet ...      shards, ``rows_per_shard`` rows each
    data/test-00000-of-000MM.parquet ...

Two passes over the pairs: the first reads only ``targetid``/``healpix`` to validate every file,
count each split and fix the shard counts (they are in the file names); the second streams the
files in pixel order and writes full shards, holding at most one shard per split in memory.

Re-running replaces the dataset and never duplicates shards. A local ``out_dir`` is built in a
temporary sibling folder and swapped in with two renames. On an object store (s3://) each file
is one atomic PUT: shards first, the card last, then stale shards of a previous build are
deleted; readers may briefly see a mix of old and new shards there.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from astroclip_core.formats import FormatError
from astroclip_core.fsio import (
    atomic_write_bytes,
    atomic_write_parquet,
    filesystem,
    is_local,
    make_temp_dir,
    temp_name,
)
from astroclip_core.publish.card import render_card
from astroclip_core.publish.features import MAX_ROWS_PER_SHARD, to_hf_table
from astroclip_core.publish.info import (
    CARD_NAME,
    DATA_FOLDER,
    SPLITS,
    HfDatasetInfo,
    SplitStats,
    shard_name,
)
from astroclip_core.releases import Release
from astroclip_core.tables.pairs import iter_pairs_batches, list_pairs_files
from astroclip_core.tables.schemas import PAIRS_SCHEMA
from astroclip_core.tables.splits import TEST_FRACTION, split_of

logger = logging.getLogger(__name__)

DEFAULT_ROWS_PER_SHARD = 1000  # ~370 MB of arrays per shard
READ_BATCH_ROWS = 256  # ~95 MB of pairs read at a time
ROW_GROUP_ROWS = 100  # ~37 MB row groups: the dataset viewer and streaming read one at a time
_PARQUET_OPTIONS = {
    "compression": "zstd",
    # Dictionaries only for the few-valued strings: on float arrays they inflate the file by ~40%.
    "use_dictionary": ["survey", "program", "morphtype", "split"],
    # Byte-stream split puts the float exponents together so that zstd finds them (-8% on noise).
    "column_encoding": {
        "image.list.element.list.element.list.element": "BYTE_STREAM_SPLIT",
        "flux.list.element": "BYTE_STREAM_SPLIT",
        "ivar.list.element": "BYTE_STREAM_SPLIT",
    },
    "write_page_index": True,
    # Content-defined pages let the Hub's xet storage deduplicate unchanged rows on re-push.
    "use_content_defined_chunking": True,
}


def _count_splits(files: list[tuple[int, str]], test_fraction: float) -> dict[str, int]:
    """Rows per split over all files; checks pixels and that no TARGETID appears twice."""
    counts = dict.fromkeys(SPLITS, 0)
    seen: list[np.ndarray] = []
    for pixel, url in files:
        parts = list(iter_pairs_batches(url, ["targetid", "healpix"], batch_rows=1 << 20))
        table = pa.concat_tables(parts) if parts else PAIRS_SCHEMA.empty_table()
        healpix = table.column("healpix").to_numpy()
        if np.any(healpix != pixel):
            bad = int(healpix[healpix != pixel][0])
            problem = f"row with healpix column {bad} in the folder of pixel {pixel}"
            raise FormatError(url, problem)
        targetid = table.column("targetid").to_numpy()
        seen.append(targetid)
        splits = split_of(targetid, test_fraction)
        for name in SPLITS:
            counts[name] += int(np.count_nonzero(splits == name))
    all_ids = np.concatenate(seen) if seen else np.empty(0, dtype=np.int64)
    unique, n_seen = np.unique(all_ids, return_counts=True)
    if np.any(n_seen > 1):
        raise ValueError(
            f"TARGETID {int(unique[n_seen > 1][0])} appears more than once in the pairs"
        )
    return counts


def _pairs_by_split(
    files: list[tuple[int, str]], test_fraction: float
) -> Iterator[tuple[str, pa.Table]]:
    """Batches of rows of one split, by the TARGETID hash, with the ``split`` column rewritten.

    Files are read in batches of READ_BATCH_ROWS so that a dense pixel never has to fit in memory.
    """
    for _pixel, url in files:
        for table in iter_pairs_batches(url, PAIRS_SCHEMA.names, READ_BATCH_ROWS):
            splits = split_of(table.column("targetid").to_numpy(), test_fraction)
            index = table.schema.get_field_index("split")
            table = table.set_column(index, "split", pa.array(splits.tolist(), pa.string()))
            for name in SPLITS:
                rows = np.flatnonzero(splits == name)
                if rows.size:
                    yield name, table.take(pa.array(rows))


class _ShardWriter:
    """Buffers pairs rows per split and writes a shard whenever ``rows_per_shard`` are buffered."""

    def __init__(self, stage: str, counts: dict[str, int], rows_per_shard: int) -> None:
        self.stage = stage.rstrip("/")
        self.rows_per_shard = rows_per_shard
        # An empty split gets no shard: ``datasets`` cannot load a split without rows.
        self.n_shards = {s: -(-counts[s] // rows_per_shard) for s in SPLITS}
        self.buffers: dict[str, list[pa.Table]] = {s: [] for s in SPLITS}
        self.written: dict[str, list[tuple[str, int, int, int]]] = {s: [] for s in SPLITS}

    def add(self, split: str, table: pa.Table) -> None:
        """Buffer ``table`` (rows of ``split``) and write every full shard."""
        self.buffers[split].append(table)
        buffered = pa.concat_tables(self.buffers[split])
        while buffered.num_rows >= self.rows_per_shard:
            self._write(split, buffered.slice(0, self.rows_per_shard))
            buffered = buffered.slice(self.rows_per_shard)
        self.buffers[split] = [buffered] if buffered.num_rows else []

    def finish(self) -> list[SplitStats]:
        """Write the last partial shard of each split and return the per-split stats."""
        for split in SPLITS:
            if self.buffers[split]:
                self._write(split, pa.concat_tables(self.buffers[split]))
            if len(self.written[split]) != self.n_shards[split]:
                raise RuntimeError(
                    f"wrote {len(self.written[split])} {split} shards, expected {self.n_shards[split]}"
                )
        return [
            SplitStats(
                name=split,
                num_examples=sum(w[1] for w in self.written[split]),
                num_shards=len(self.written[split]),
                num_bytes=sum(w[2] for w in self.written[split]),
                parquet_bytes=sum(w[3] for w in self.written[split]),
            )
            for split in SPLITS
        ]

    def _write(self, split: str, pairs: pa.Table) -> None:
        name = shard_name(split, len(self.written[split]), self.n_shards[split])
        table = to_hf_table(pairs)
        n_bytes = atomic_write_parquet(
            f"{self.stage}/{name}", table, row_group_size=ROW_GROUP_ROWS, **_PARQUET_OPTIONS
        )
        self.written[split].append((name, table.num_rows, table.nbytes, n_bytes))
        logger.info("wrote %s: %d rows, %d bytes", name, table.num_rows, n_bytes)


def build_hf_dataset(
    pairs_dir: str,
    out_dir: str,
    release: Release,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    test_fraction: float = TEST_FRACTION,
) -> HfDatasetInfo:
    """Write the Parquet shards and dataset card of ``release`` from the pairs under ``pairs_dir``.

    ``pairs_dir`` is the hive-partitioned pairs folder (local path or fsspec URL), ``out_dir``
    the dataset folder (local path or fsspec URL); any previous build there is replaced.
    ``release`` (name and production) is recorded in the card. The
    train/test split is ``split_of(targetid, test_fraction)``. Raises FileNotFoundError when
    there are no pairs files, FormatError for a file that is not a pairs table, ValueError for
    a bad argument, an empty table or a TARGETID present twice.
    """
    if not 1 <= rows_per_shard <= MAX_ROWS_PER_SHARD:
        raise ValueError(f"rows_per_shard {rows_per_shard} must lie in [1, {MAX_ROWS_PER_SHARD}]")
    split_of(np.zeros(1, dtype=np.int64), test_fraction)  # validates test_fraction
    files = list_pairs_files(pairs_dir)
    counts = _count_splits(files, test_fraction)
    if sum(counts.values()) == 0:
        raise ValueError(f"the pairs under {pairs_dir} hold no rows")
    logger.info("building %s from %d pairs files: %s", out_dir, len(files), counts)
    for split in SPLITS:
        if counts[split] == 0:
            logger.warning("split %r has no rows; the dataset will not list it", split)

    stage = _Stage(out_dir)
    try:
        writer = _ShardWriter(stage.path, counts, rows_per_shard)
        for split, table in _pairs_by_split(files, test_fraction):
            writer.add(split, table)
        splits = tuple(writer.finish())
        shards = tuple(name for split in SPLITS for name, *_ in writer.written[split])
        info = HfDatasetInfo(
            out_dir=out_dir,
            release=release.name,
            specprod=release.specprod,
            test_fraction=test_fraction,
            splits=splits,
            files=(*shards, CARD_NAME),
        )
        atomic_write_bytes(f"{stage.path}/{CARD_NAME}", render_card(info).encode())
    except BaseException:
        stage.abort()
        raise
    stage.commit(info.files)
    for stats in splits:
        logger.info(
            "%s: %d rows in %d shards, %d parquet bytes",
            stats.name,
            stats.num_examples,
            stats.num_shards,
            stats.parquet_bytes,
        )
    return info


class _Stage:
    """Where a build writes, and how the finished build replaces ``out_dir``.

    Local: a temporary sibling folder (``fsio.make_temp_dir``), renamed over ``out_dir`` on
    commit; the previous build is renamed to a temporary name and then deleted. A build killed
    on the way leaves one of those temporaries; the next build of any release sweeps it (see
    :mod:`astroclip_core.fsio`). Remote: ``out_dir`` itself; commit deletes the shards under
    ``data/`` that the new build did not write.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir.rstrip("/")
        self.target = Path(out_dir.removeprefix("file://")) if is_local(out_dir) else None
        if self.target is None:
            self.path = self.out_dir
        else:
            self.path = str(make_temp_dir(self.target))
            os.chmod(self.path, 0o755)  # mkdtemp makes it owner-only; the dataset is for sharing

    def abort(self) -> None:
        """Drop a failed local build (a remote one leaves its complete files in place)."""
        if self.target is not None:
            shutil.rmtree(self.path, ignore_errors=True)

    def commit(self, files: tuple[str, ...]) -> None:
        """Make the build in :attr:`path` the dataset at ``out_dir``; ``files`` are its files."""
        if self.target is None:
            self._remove_stale_remote(set(files))
            return
        old = temp_name(self.target)
        if self.target.exists():
            self.target.rename(old)
        Path(self.path).rename(self.target)
        shutil.rmtree(old, ignore_errors=True)

    def _remove_stale_remote(self, keep: set[str]) -> None:
        fs, root = filesystem(self.out_dir)
        for path in fs.glob(f"{root.rstrip('/')}/{DATA_FOLDER}/*.parquet"):
            relative = f"{DATA_FOLDER}/{path.rsplit('/', 1)[-1]}"
            if relative not in keep:
                fs.rm_file(path)
                logger.info("removed stale shard %s", relative)
