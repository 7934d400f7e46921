"""Training batches from the pairs table: whole-file reads decoded by
:func:`astroclip_core.tables.pairs.read_pairs_split`, no per-row Python work.

An epoch's order is a *block shuffle* that is a pure function of (seed, epoch): the files are
permuted, consecutive files are grouped into windows of at least ``shuffle_window_rows`` rows,
and rows are permuted within each window. So only about two windows of decoded rows are in
memory at once, and any batch of any epoch can be produced directly (which is how a resumed run
continues at the exact batch where it stopped). Under DDP every rank computes the same order
and takes its own ``batch_size`` slice of each global batch of ``batch_size * world_size`` rows;
every rank therefore runs the same number of steps.

When the decoded files fit in ``cache_max_bytes`` the loader keeps them in memory across
epochs (after the first epoch a batch costs one gather copy per column); otherwise it evicts
each file after its last batch of the epoch and re-reads it next epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from astroclip_core.tables.pairs import (
    PAIR_ARRAY_COLUMNS,
    PairArrays,
    read_pairs_split,
    read_pairs_split_column,
)

# Decoded bytes per row: image + flux + ivar + mask + targetid + z
ROW_BYTES = 4 * 3 * 152 * 152 + (4 + 4 + 1) * 7781 + 8 + 8


def _empty_batch(n: int, like: PairArrays) -> PairArrays:
    return PairArrays(
        *(
            np.empty((n, *getattr(like, c).shape[1:]), getattr(like, c).dtype)
            for c in PAIR_ARRAY_COLUMNS
        )
    )


@dataclass(frozen=True)
class PairsIndex:
    """The files of a training set and how many rows of the wanted split each holds."""

    files: tuple[str, ...]
    n_rows: tuple[int, ...]  # per file, rows of the split
    n_file_rows: tuple[int, ...]  # per file, all rows (what a whole-file read decodes)

    @property
    def total_rows(self) -> int:
        """Rows over all files."""
        return int(sum(self.n_rows))


def build_index(files: Sequence[str], split: str = "train") -> PairsIndex:
    """Count each file's ``split`` rows (reads only the split column)."""
    counts, totals = [], []
    for path in files:
        values = read_pairs_split_column(path)
        counts.append(int(np.count_nonzero(values == split)))
        totals.append(len(values))
    if not sum(counts):
        raise ValueError(f"no rows with split={split!r} in {len(files)} pairs files")
    return PairsIndex(files=tuple(files), n_rows=tuple(counts), n_file_rows=tuple(totals))


def epoch_order(
    index: PairsIndex, seed: int, epoch: int, shuffle_window_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """The block-shuffled row order of one epoch: (file index (N,), row within file (N,))."""
    rng = np.random.default_rng([seed, epoch])
    file_ids, row_ids, window_f, window_r = [], [], [], []

    def flush() -> None:
        if window_f:
            f, r = np.concatenate(window_f), np.concatenate(window_r)
            perm = rng.permutation(len(f))
            file_ids.append(f[perm])
            row_ids.append(r[perm])
            window_f.clear()
            window_r.clear()

    for fi in rng.permutation(len(index.files)):
        n = index.n_rows[fi]
        window_f.append(np.full(n, fi, dtype=np.int64))
        window_r.append(np.arange(n, dtype=np.int64))
        if sum(len(w) for w in window_f) >= shuffle_window_rows:
            flush()
    flush()
    return np.concatenate(file_ids), np.concatenate(row_ids)


class PairsLoader:
    """This rank's batches of training pairs, epoch by epoch (see the module docstring)."""

    def __init__(
        self,
        index: PairsIndex,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle_window_rows: int = 2048,
        split: str = "train",
        cache_max_bytes: int = 4 * 2**30,
    ) -> None:
        self.index = index
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle_window_rows = shuffle_window_rows
        self.split = split
        self.keep_all = sum(index.n_file_rows) * ROW_BYTES <= cache_max_bytes
        self._cache: dict[int, tuple[PairArrays, np.ndarray]] = {}
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"{index.total_rows} {split} rows cannot fill one global batch of "
                f"{batch_size} x {world_size} ranks"
            )

    @property
    def batches_per_epoch(self) -> int:
        """Full global batches per epoch (the last partial one is dropped)."""
        return self.index.total_rows // (self.batch_size * self.world_size)

    def iter_epoch(self, epoch: int, start_batch: int = 0) -> Iterator[PairArrays]:
        """Yield this rank's batches of ``epoch`` from batch ``start_batch`` on."""
        files, rows = epoch_order(self.index, self.seed, epoch, self.shuffle_window_rows)
        global_b = self.batch_size * self.world_size
        n_batches = self.batches_per_epoch
        # (n_batches, B) positions of this rank's rows in the epoch order
        mine = (
            np.arange(n_batches)[:, None] * global_b
            + self.rank * self.batch_size
            + np.arange(self.batch_size)[None, :]
        )
        last_use = np.full(len(self.index.files), -1)
        np.maximum.at(
            last_use, files[mine].ravel(), np.repeat(np.arange(n_batches), self.batch_size)
        )
        cache = self._cache if self.keep_all else {}
        for b in range(start_batch, n_batches):
            f, r = files[mine[b]], rows[mine[b]]
            batch: PairArrays | None = None
            start = 0
            # Rows are grouped by file inside the batch (the order within a batch does not
            # matter to the loss); each group is one np.take straight into the output.
            for fi in np.unique(f):
                if fi not in cache:
                    cache[fi] = read_pairs_split(self.index.files[fi], self.split)
                arrays, split_rows = cache[fi]
                src = split_rows[r[f == fi]]
                batch = batch if batch is not None else _empty_batch(self.batch_size, arrays)
                for c in PAIR_ARRAY_COLUMNS:
                    out = getattr(batch, c)[start : start + len(src)]
                    np.take(getattr(arrays, c), src, axis=0, out=out)
                start += len(src)
            yield batch
            for fi in [k for k in cache if last_use[k] <= b and not self.keep_all]:
                del cache[fi]
