"""Benchmark: pairs into batched torch tensors on ONE core, our loader vs ``datasets``.

Builds ``--rows`` synthetic pairs (random g,r,z images and spectra) in a temporary folder and,
in the same run, pinned to one CPU with one torch thread, measures pairs/s of
  1. ``PairsLoader`` (block-shuffled whole-file reads of the fixed-size-binary Parquet +
     ``decode_blob``) into tensors: in later epochs with its decoded-file cache (the default
     when the data fit in memory; ``datasets`` likewise reads its prepared Arrow cache), with
     no cache (every epoch re-reads the Parquet), and with the training augmentations;
  2. Hugging Face ``datasets`` on the same rows stored with typed features (Array3D image,
     Sequence flux/ivar/mask), ``.with_format('torch')``, batched contiguous slices (its
     best case) and batched shuffled indices;
  3. for the record, a whole-file Parquet read + decode to numpy of the big columns stored as
     fixed-size binary (the chosen encoding) vs fixed-size lists.
Prints the figures and the ratios against the goals (>= 5,000 pairs/s, >= 1.5x datasets).

Run: ``.venv/bin/python bench/bench_loader.py [--rows 2000] [--batch 64] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astroclip_core.storage import partition_file  # noqa: E402
from astroclip_core.tables.schemas import (  # noqa: E402
    IMAGE_SHAPE,
    SPECTRUM_SHAPE,
    decode_blob,
    encode_blob,
)
from astroclip_core.training.augment import AugmentConfig, batch_generator, train_inputs  # noqa: E402
from astroclip_core.training.data import PairsLoader, build_index  # noqa: E402

BIG = ("image", "flux", "ivar", "mask")


def pin_one_core() -> str:
    """Pin this process to one CPU and torch/arrow to one thread; describe what was done."""
    torch.set_num_threads(1)
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to cpu {cpu}"
    return "not pinned (no sched_setaffinity)"


def make_arrays(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random pairs arrays with the pairs table's dtypes and shapes."""
    rng = np.random.default_rng(seed)
    return {
        "targetid": np.arange(n, dtype=np.int64) + 39627000000000,
        "z": rng.uniform(0.0, 1.0, n),
        "image": rng.standard_normal((n, *IMAGE_SHAPE), dtype=np.float32) * 0.01,
        "flux": rng.standard_normal((n, *SPECTRUM_SHAPE), dtype=np.float32) + 3.0,
        "ivar": rng.uniform(1.0, 4.0, (n, *SPECTRUM_SHAPE)).astype(np.float32),
        "mask": (rng.random((n, *SPECTRUM_SHAPE)) < 0.01).astype(np.uint8),
    }


def binary_table(a: dict[str, np.ndarray]) -> pa.Table:
    """The loader's columns, big ones as fixed-size binary (PAIRS_SCHEMA encoding)."""
    cols = {"targetid": pa.array(a["targetid"]), "z": pa.array(a["z"])}
    cols.update({c: encode_blob(c, a[c]) for c in BIG})
    cols["split"] = pa.array(["train"] * len(a["z"]))
    return pa.table(cols)


def _fixed_list(values: np.ndarray) -> pa.Array:
    flat = values.reshape(len(values), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])


def fixed_list_table(a: dict[str, np.ndarray]) -> pa.Table:
    """The same big columns as flat fixed-size lists."""
    return pa.table({c: _fixed_list(a[c]) for c in BIG})


def _nested_list(values: np.ndarray) -> pa.Array:
    # (N, d1, ..., dk) -> list<...list<value>> with the offsets built in numpy
    arr: pa.Array = pa.array(values.ravel())
    for depth in range(values.ndim - 1, 0, -1):
        n_lists = int(np.prod(values.shape[:depth]))
        offsets = np.arange(n_lists + 1, dtype=np.int32) * values.shape[depth]
        arr = pa.ListArray.from_arrays(pa.array(offsets), arr)
    return arr


def hf_dataset(a: dict[str, np.ndarray], cache_dir: Path):
    """A ``datasets.Dataset`` of the same rows with Array3D / Sequence features."""
    import datasets

    features = datasets.Features(
        {
            "targetid": datasets.Value("int64"),
            "z": datasets.Value("float64"),
            "image": datasets.Array3D(shape=IMAGE_SHAPE, dtype="float32"),
            "flux": datasets.Sequence(datasets.Value("float32")),
            "ivar": datasets.Sequence(datasets.Value("float32")),
            "mask": datasets.Sequence(datasets.Value("uint8")),
        }
    )
    table = pa.table(
        {
            "targetid": pa.array(a["targetid"]),
            "z": pa.array(a["z"]),
            **{c: _nested_list(a[c]) for c in BIG},
        }
    )
    path = cache_dir / "hf.parquet"
    pq.write_table(table, path)
    ds = datasets.Dataset.from_parquet(str(path), features=features, cache_dir=str(cache_dir / "c"))
    return ds.with_format("torch")


def best_rate(fn: Callable[[], int], repeats: int) -> float:
    """Best pairs/s over ``repeats`` calls of ``fn`` (which returns the pairs it produced)."""
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t0))
    return max(rates)


def run(rows: int, batch: int, repeats: int) -> None:
    """Build the data, time every reader, print figures and ratios."""
    where = pin_one_core()
    arrays = make_arrays(rows)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = []
        for pixel, part in enumerate(np.array_split(np.arange(rows), 4)):  # 4 partition files
            path = Path(partition_file(str(root / "pairs"), pixel))
            path.parent.mkdir(parents=True)
            pq.write_table(binary_table({k: v[part] for k, v in arrays.items()}), path)
            files.append(str(path))
        list_path = root / "fixed_list.parquet"
        pq.write_table(fixed_list_table(arrays), list_path)
        ds = hf_dataset(arrays, root)
        index = build_index(files)
        loader = PairsLoader(index, batch_size=batch, seed=0)
        loader_cold = PairsLoader(index, batch_size=batch, seed=0, cache_max_bytes=0)
        del arrays

        def ours(augment: bool, cold: bool = False) -> int:
            n = 0
            source = loader_cold if cold else loader
            for step, b in enumerate(source.iter_epoch(step_epoch(cold))):
                if augment:
                    inputs = train_inputs(b, 144, AugmentConfig(), batch_generator(0, 0, step))
                    n += len(inputs.flux)
                else:
                    tensors = [torch.from_numpy(getattr(b, c)) for c in BIG]
                    n += len(tensors[0])
            return n

        def step_epoch(cold: bool) -> int:
            epochs.append(len(epochs))
            return epochs[-1]

        epochs: list[int] = []
        ours(False)  # the first epoch of the caching loader fills its cache

        def hf(shuffled: bool) -> int:
            order = np.random.default_rng(0).permutation(len(ds)) if shuffled else None
            n = 0
            for start in range(0, len(ds) - batch + 1, batch):
                rows_ = (
                    order[start : start + batch].tolist()
                    if shuffled
                    else slice(start, start + batch)
                )
                out = ds[rows_]
                n += len(out["image"])
            return n

        def decode(path: str, binary: bool) -> int:
            table = pq.read_table(path, columns=list(BIG))
            for c in BIG:
                if binary:
                    decode_blob(c, table.column(c))
                else:
                    col = table.column(c).combine_chunks()
                    col.values.to_numpy().reshape(len(col), -1)
            return table.num_rows

        figures = {
            "ours -> tensors": best_rate(lambda: ours(False), repeats),
            "ours, no cache (reads Parquet)": best_rate(lambda: ours(False, cold=True), repeats),
            "ours + augmentation": best_rate(lambda: ours(True), repeats),
            "datasets torch, contiguous": best_rate(lambda: hf(False), repeats),
            "datasets torch, shuffled": best_rate(lambda: hf(True), repeats),
            "read+decode fixed-size binary": best_rate(lambda: decode(files[0], True), repeats),
            "read+decode fixed-size list": best_rate(
                lambda: decode(str(list_path), False), repeats
            ),
        }
    print(f"{rows} pairs, batch {batch}, best of {repeats}, one core ({where})")
    for name, rate in figures.items():
        print(f"  {name:<32} {rate:>9,.0f} pairs/s")
    ours_rate = figures["ours -> tensors"]
    print(f"ours / 5,000 goal                   {ours_rate / 5000:6.2f}x")
    print(
        f"ours / datasets contiguous          {ours_rate / figures['datasets torch, contiguous']:6.2f}x (goal >= 1.5)"
    )
    print(
        f"ours / datasets shuffled            {ours_rate / figures['datasets torch, shuffled']:6.2f}x"
    )
    ratio = figures["read+decode fixed-size binary"] / figures["read+decode fixed-size list"]
    print(f"fixed-size binary / fixed-size list {ratio:6.2f}x")


def main() -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run(args.rows, args.batch, args.repeats)


if __name__ == "__main__":
    main()
