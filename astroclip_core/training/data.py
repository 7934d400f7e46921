"""Training batches streamed from the pairs table or from the published dataset's shards.

**Source.** A training set is a list of Parquet files (:func:`source_files` takes them from a
:class:`TrainConfig`): the pairs table's partition files, or the ``train`` shards of the
published Hugging Face dataset. :mod:`astroclip_core.tables.pairs` reads and decodes both (page
checksums verified); this module orders, batches and prefetches, and checks each batch's
pixels for non-finite values (a FormatError names the file), once per row it yields.

**Order.** An epoch's order is a *block shuffle*, a pure function of (seed, epoch, rank): the
units of the set are permuted, consecutive units are grouped into windows of at least
``shuffle_window_rows`` rows, and rows are permuted within each window. The unit is

- ``"file"`` (the default): whole files. This is the order of the loader before it streamed,
  kept so that the default run sees the same batches. Under DDP every rank computes the same
  order and takes its own ``batch_size`` slice of each global batch, so every rank reads every
  file of a window.
- ``"row_group"`` (streaming): single row groups of every file, so that a window mixes row
  groups of many files and holds about ``shuffle_window_rows`` rows whatever the file sizes.
  Under DDP the permuted row groups are dealt out, each to the rank with the fewest rows so far:
  each rank reads only its own shard. That deal leaves the ranks at most one row group's rows
  apart, so every rank runs ``(rows - (world_size - 1) * largest row group) // (world_size *
  batch_size)`` batches (the rest of its rows wait for another epoch's deal).

Either way no row repeats within an epoch, ranks never share a row, and the last partial batch
is dropped. Rows are grouped by unit inside a batch (the loss does not care about order within
a batch; the grouping lets each unit's rows be copied with one ``np.take``).

**Memory.** Only the units of about two windows are decoded at once; each is evicted after its
last batch. When all the rows a read decodes fit in ``cache_max_bytes`` the loader keeps them
across epochs instead (small sets; after the first epoch a batch costs one gather copy).

**Prefetch.** With ``prefetch_batches > 0`` a background thread reads, decodes and gathers the
coming batches into a queue of that depth while the caller runs its step (the reads and
numpy's copies run mostly outside the GIL). Batches never depend on timing.

**Resume.** :meth:`PairsLoader.iter_from` (a global step) and :meth:`PairsLoader.iter_epoch`
(an epoch and batch) compute the order and start at that batch, reading nothing before it, so
a resumed run yields the same remaining batches as an uninterrupted one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import get_args

import numpy as np
import pyarrow as pa

from astroclip_core.formats import FormatError
from astroclip_core.publish.info import list_shards
from astroclip_core.tables.pairs import (
    PAIR_ARRAY_COLUMNS,
    PairArrays,
    check_finite_pairs,
    count_split_rows,
    list_pairs_files,
    read_pairs_split,
)
from astroclip_core.training.config import ShuffleUnit, TrainConfig

# Decoded bytes per row: image + flux + ivar + mask + targetid + z
ROW_BYTES = 4 * 3 * 152 * 152 + (4 + 4 + 1) * 7781 + 8 + 8


def source_files(config: TrainConfig) -> list[str]:
    """The training files ``config`` names: its ``files``, the partition files under its
    ``pairs_dir``, or the ``train`` shards of the published dataset at its ``hf_dir``."""
    if config.files is not None:
        return list(config.files)
    if config.hf_dir is not None:
        return list_shards(config.hf_dir, "train")
    return [url for _, url in list_pairs_files(config.pairs_dir or "")]


@dataclass(frozen=True)
class PairsIndex:
    """The files of a training set and how many rows of ``split`` each row group holds."""

    files: tuple[str, ...]
    group_rows: tuple[tuple[int, ...], ...]  # per file, per row group: all rows
    group_split_rows: tuple[tuple[int, ...], ...]  # per file, per row group: rows of split
    split: str = "train"

    @property
    def n_rows(self) -> tuple[int, ...]:
        """Rows of the split, per file."""
        return tuple(int(sum(g)) for g in self.group_split_rows)

    @property
    def n_file_rows(self) -> tuple[int, ...]:
        """All rows (what a whole-file read decodes), per file."""
        return tuple(int(sum(g)) for g in self.group_rows)

    @property
    def total_rows(self) -> int:
        """Rows of the split over all files."""
        return int(sum(self.n_rows))


def build_index(files: Sequence[str], split: str = "train") -> PairsIndex:
    """Count the ``split`` rows of each row group of each file (reads footers and the split
    column only); ValueError when there are none."""
    rows, in_split = zip(*(count_split_rows(path, split) for path in files), strict=True)
    index = PairsIndex(
        files=tuple(files),
        group_rows=tuple(tuple(int(n) for n in r) for r in rows),
        group_split_rows=tuple(tuple(int(n) for n in s) for s in in_split),
        split=split,
    )
    if not index.total_rows:
        raise ValueError(f"no rows with split={split!r} in {len(files)} pairs files")
    return index


@dataclass(frozen=True)
class _Units:
    """What the loader reads in one piece: whole files, or single row groups."""

    file: np.ndarray  # (U,) position of the file in the index
    group: np.ndarray  # (U,) row group within the file; -1 = the whole file
    rows: np.ndarray  # (U,) rows of the split
    decoded_rows: np.ndarray  # (U,) rows a read decodes (of every split)


def _units(index: PairsIndex, unit: ShuffleUnit) -> _Units:
    if unit == "file":
        n = len(index.files)
        return _Units(
            np.arange(n), np.full(n, -1), np.array(index.n_rows), np.array(index.n_file_rows)
        )
    # row groups without a row of the split are never read
    found = [
        (f, g, s, n)
        for f, (rows, split_rows) in enumerate(
            zip(index.group_rows, index.group_split_rows, strict=True)
        )
        for g, (n, s) in enumerate(zip(rows, split_rows, strict=True))
        if s
    ]
    file, group, rows, decoded = (np.array(c, dtype=np.int64) for c in zip(*found, strict=True))
    return _Units(file, group, rows, decoded)


def _block_shuffle(
    unit_rows: np.ndarray, sequence: np.ndarray, window_rows: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the units of ``sequence``, in that order, permuted within windows of at least
    ``window_rows`` rows: (unit (N,), row within the unit (N,))."""
    unit_ids, row_ids, window_u, window_r = [], [], [], []

    def flush() -> None:
        if window_u:
            u, r = np.concatenate(window_u), np.concatenate(window_r)
            perm = rng.permutation(len(u))
            unit_ids.append(u[perm])
            row_ids.append(r[perm])
            window_u.clear()
            window_r.clear()

    for ui in sequence:
        n = unit_rows[ui]
        window_u.append(np.full(n, ui, dtype=np.int64))
        window_r.append(np.arange(n, dtype=np.int64))
        if sum(len(w) for w in window_u) >= window_rows:
            flush()
    flush()
    if not unit_ids:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(unit_ids), np.concatenate(row_ids)


def file_epoch_order(
    unit_rows: np.ndarray, seed: int, epoch: int, window_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """The order of one epoch shared by all ranks: (unit (N,), row within unit (N,)).

    ``unit_rows`` (U,) are the split rows of each unit (each file, in the ``"file"`` mode).
    """
    rng = np.random.default_rng([seed, epoch])
    return _block_shuffle(unit_rows, rng.permutation(len(unit_rows)), window_rows, rng)


def deal_units(unit_rows: np.ndarray, world_size: int) -> np.ndarray:
    """The rank (U,) of each unit of ``unit_rows`` (U,), dealt in order, each to the rank with
    the fewest rows so far (the lowest such rank on a tie)."""
    load = np.zeros(world_size, dtype=np.int64)
    owner = np.empty(len(unit_rows), dtype=np.int64)
    for i, n in enumerate(unit_rows):
        owner[i] = rank = int(np.argmin(load))
        load[rank] += n
    return owner


def sharded_epoch_order(
    unit_rows: np.ndarray, seed: int, epoch: int, window_rows: int, rank: int, world_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """This rank's order of one epoch in the ``"row_group"`` mode: (unit (N,), row (N,)).

    Every rank permutes all units alike and deals them out (:func:`deal_units`); each then
    block-shuffles its own units with a generator of its own.
    """
    sequence = np.random.default_rng([seed, epoch]).permutation(len(unit_rows))
    mine = sequence[deal_units(unit_rows[sequence], world_size) == rank]
    return _block_shuffle(unit_rows, mine, window_rows, np.random.default_rng([seed, epoch, rank]))


@dataclass(frozen=True)
class EpochPlan:
    """Where each row of this rank's batches of one epoch comes from."""

    unit: np.ndarray  # (n_batches, B) unit of each row
    row: np.ndarray  # (n_batches, B) row among the unit's split rows
    last_use: np.ndarray  # (U,) last batch that needs each unit; -1 = none


def _empty_batch(n: int, like: PairArrays) -> PairArrays:
    # Arrays over buffers of Arrow's memory pool, which hands a freed batch's pages to the next
    # one. A fresh numpy array of this size (~22 MB at B=64) is a new mapping, and its page
    # faults cost more than the copy into it.
    arrays = []
    for c in PAIR_ARRAY_COLUMNS:
        like_c = getattr(like, c)
        shape = (n, *like_c.shape[1:])
        buffer = pa.allocate_buffer(int(np.prod(shape)) * like_c.itemsize)
        arrays.append(np.frombuffer(buffer, like_c.dtype).reshape(shape))
    return PairArrays(*arrays)


def _row_bytes(array: np.ndarray) -> np.ndarray:
    """(N, bytes per row) uint8 view of a C-contiguous (N, ...) array."""
    return array.reshape(len(array), -1).view(np.uint8)


class PairsLoader:
    """This rank's batches of training pairs, epoch by epoch (see the module docstring).

    ``prefetch_batches`` = 0 produces each batch when it is asked for, in the caller's thread.
    ``peak_resident_rows`` records the most decoded rows held at once (cache included).
    """

    def __init__(
        self,
        index: PairsIndex,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle_window_rows: int = 2048,
        cache_max_bytes: int = 4 * 2**30,
        shuffle_unit: ShuffleUnit = "file",
        prefetch_batches: int = 0,
    ) -> None:
        if shuffle_unit not in get_args(ShuffleUnit):
            raise ValueError(
                f"shuffle_unit must be one of {get_args(ShuffleUnit)}, got {shuffle_unit!r}"
            )
        if prefetch_batches < 0 or shuffle_window_rows < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"bad loader settings: prefetch_batches={prefetch_batches}, "
                f"shuffle_window_rows={shuffle_window_rows}, rank={rank} of {world_size}"
            )
        self.index = index
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle_window_rows = shuffle_window_rows
        self.shuffle_unit = shuffle_unit
        self.prefetch_batches = prefetch_batches
        self.units = _units(index, shuffle_unit)
        self.keep_all = int(self.units.decoded_rows.sum()) * ROW_BYTES <= cache_max_bytes
        self.peak_resident_rows = 0
        self._cache: dict[int, tuple[PairArrays, np.ndarray]] = {}
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"{index.total_rows} {index.split} rows cannot fill one global batch of "
                f"{batch_size} x {world_size} ranks"
            )

    @property
    def batches_per_epoch(self) -> int:
        """Batches per epoch, the same on every rank (full batches only)."""
        global_b = self.batch_size * self.world_size
        if self.shuffle_unit == "file":
            return self.index.total_rows // global_b
        spare = (self.world_size - 1) * int(self.units.rows.max())  # the deal's imbalance bound
        return max(0, self.index.total_rows - spare) // global_b

    def epoch_plan(self, epoch: int) -> EpochPlan:
        """Where each row of this rank's batches of ``epoch`` comes from."""
        n_batches, b = self.batches_per_epoch, self.batch_size
        if self.shuffle_unit == "file":
            units, rows = file_epoch_order(
                self.units.rows, self.seed, epoch, self.shuffle_window_rows
            )
            # (n_batches, B) positions of this rank's rows in the shared order
            mine = (
                np.arange(n_batches)[:, None] * b * self.world_size
                + self.rank * b
                + np.arange(b)[None, :]
            )
            plan_units, plan_rows = units[mine], rows[mine]
        else:
            units, rows = sharded_epoch_order(
                self.units.rows,
                self.seed,
                epoch,
                self.shuffle_window_rows,
                self.rank,
                self.world_size,
            )
            plan_units = units[: n_batches * b].reshape(n_batches, b)
            plan_rows = rows[: n_batches * b].reshape(n_batches, b)
        last_use = np.full(len(self.units.rows), -1)
        np.maximum.at(last_use, plan_units.ravel(), np.repeat(np.arange(n_batches), b))
        return EpochPlan(plan_units, plan_rows, last_use)

    def iter_epoch(self, epoch: int, start_batch: int = 0) -> Iterator[PairArrays]:
        """This rank's batches of ``epoch`` from batch ``start_batch`` on."""
        return self._prefetched(self._produce(epoch, start_batch, endless=False))

    def iter_from(self, step: int) -> Iterator[PairArrays]:
        """This rank's batches from global step ``step`` on, epoch after epoch, endlessly."""
        epoch, start = divmod(step, self.batches_per_epoch)
        return self._prefetched(self._produce(epoch, start, endless=True))

    def _produce(self, epoch: int, start: int, endless: bool) -> Generator[PairArrays]:
        cache = self._cache if self.keep_all else {}
        while True:
            plan = self.epoch_plan(epoch)
            for b in range(start, len(plan.unit)):
                yield self._gather(plan.unit[b], plan.row[b], cache)
                if not self.keep_all:
                    for u in [u for u in cache if plan.last_use[u] <= b]:
                        del cache[u]
            if not endless:
                return
            epoch, start = epoch + 1, 0

    def _gather(
        self, units: np.ndarray, rows: np.ndarray, cache: dict[int, tuple[PairArrays, np.ndarray]]
    ) -> PairArrays:
        # units, rows: (B,) where each row of the batch comes from
        batch: PairArrays | None = None
        start = 0
        for u in np.unique(units):
            if u not in cache:
                cache[u] = self._read(int(u))
                resident = sum(int(self.units.decoded_rows[k]) for k in cache)
                self.peak_resident_rows = max(self.peak_resident_rows, resident)
            arrays, split_rows = cache[u]
            src = split_rows[rows[units == u]]
            batch = batch if batch is not None else _empty_batch(self.batch_size, arrays)
            for c in PAIR_ARRAY_COLUMNS:
                # rows as bytes: a blob read from its Parquet page is a view of the mapped file
                # at any byte offset, and numpy copies unaligned float32 item by item
                out = _row_bytes(getattr(batch, c)[start : start + len(src)])
                np.take(_row_bytes(getattr(arrays, c)), src, axis=0, out=out)
            start += len(src)
        assert batch is not None  # a batch has at least one row
        try:
            # once per batch, over the rows it holds (aligned and just copied: a fast pass)
            check_finite_pairs(batch, "<batch>")
        except FormatError:
            self._raise_non_finite(batch, np.sort(units))
        return batch

    def _raise_non_finite(self, batch: PairArrays, units: np.ndarray) -> None:
        # units (B,): the unit of each batch row, in batch order; name the first bad row's file
        for c in ("image", "flux", "ivar"):
            values = getattr(batch, c)
            bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
            if bad.any():
                path = self.index.files[int(self.units.file[units[int(np.argmax(bad))]])]
                n = int(np.count_nonzero(~np.isfinite(values[bad])))
                raise FormatError(path, f"column {c!r} has {n} non-finite values")
        raise FormatError(self.index.files[int(self.units.file[units[0]])], "non-finite values")

    def _read(self, u: int) -> tuple[PairArrays, np.ndarray]:
        group = int(self.units.group[u])
        path = self.index.files[int(self.units.file[u])]
        # finiteness is checked per batch (_gather), on the rows the loader yields
        groups = None if group < 0 else (group,)
        return read_pairs_split(path, self.index.split, groups, check_finite=False)

    def _prefetched(self, batches: Generator[PairArrays]) -> Iterator[PairArrays]:
        """``batches``, produced ``prefetch_batches`` ahead in a background thread."""
        if self.prefetch_batches == 0:
            return batches
        return _background(batches, self.prefetch_batches)


def _background(batches: Generator[PairArrays], depth: int) -> Iterator[PairArrays]:
    # The producer thread puts ("batch", b), then ("end", None) or ("error", exception); it
    # stops at the next batch once the consumer is closed (a queue put waits at most 50 ms).
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(("batch", batch)):
                    return
            put(("end", None))
        except BaseException as err:  # handed to the consumer, which raises it
            put(("error", err))

    thread = threading.Thread(target=produce, name="pairs-loader-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()
        batches.close()
