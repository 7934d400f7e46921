"""Benchmark: the streaming pairs loader on ONE core, from disk, against Hugging Face ``datasets``.

Everything runs pinned to one CPU with one thread for torch, OpenMP, MKL and Arrow. The data
are synthetic pairs (random g,r,z images and spectra) written by the project's own writers:
``tables.pairs.write_pairs`` (the pairs table: 256-row row groups, blobs as fixed-size binary)
and ``publish.dataset.build_hf_dataset`` (the published shards: typed lists, zstd, 100-row row
groups). Every reader starts from those files; no in-memory cache unless a line says so.

Throughput (``--rows`` pairs, best of ``--repeats`` epochs), pairs/s decoded into tensors, per
second of wall time and per second of the process's CPU time (they agree on an idle core; on a
shared machine the second is the steadier):
  - ours, pairs Parquet: ``PairsLoader`` with ``shuffle_unit='row_group'``, no cache, without
    and with the prefetch thread (which shares the one core); the ``'file'`` unit (the default
    order); and, for the record, the in-memory cache after the first epoch;
  - ours, published shards: the same loader on the ``train`` shards;
  - for the record, Arrow's row-group reads alone with and without page checksums (the
    project's readers always verify them), and ours alone (``read_pairs_split`` of every row
    group: the float columns from their pages, ``tables.parquet_pages`` and
    ``tables.parquet_lists``, CRC-32 verified; no batches);
  - ``datasets`` on the same shards: ``load_dataset('parquet', streaming=True)`` with format
    torch (reads the Parquet shards as we do), and the map-style ``load_dataset('parquet')``:
    its one-off conversion into an Arrow cache on disk, then batches from that cache with
    format torch and numpy (shuffled and contiguous indices).
Memory: one epoch of the streaming loader (no cache, prefetch 4, windows of ``--mem-window``
rows) over the ``--rows`` pairs and over 8x as many, each in a fresh subprocess that reports
its peak RSS (VmHWM).

Run: ``.venv/bin/python bench/bench_loader.py [--rows 2048] [--mem-window 512] [--repeats 3]``
(about 8 GB of temporary files; ``BENCH_TMP`` chooses their folder).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy and torch load their thread pools

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astroclip_core.publish.info import list_shards  # noqa: E402
from astroclip_core.storage import StorageLayout  # noqa: E402
from astroclip_core.tables.pairs import PairArrays, list_pairs_files, write_pairs  # noqa: E402
from astroclip_core.tables.schemas import (  # noqa: E402
    IMAGE_SHAPE,
    PAIRS_SCHEMA,
    SPECTRUM_SHAPE,
    encode_blob,
)
from astroclip_core.training.data import PairsLoader, build_index  # noqa: E402

RELEASE = "edr"
BIG = ("image", "flux", "ivar", "mask")
COLUMNS = ["targetid", "z", *BIG]
BLOCK_ROWS = 256  # random rows drawn once and repeated (with new targetids) to fill a set


def pin_one_core() -> str:
    """Pin this process to one CPU and torch/Arrow to one thread; describe what was done."""
    torch.set_num_threads(1)
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to cpu {cpu}"
    return "not pinned (no sched_setaffinity)"


def random_block(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` random rows of the big columns, with the pairs table's dtypes and shapes."""
    rng = np.random.default_rng(seed)
    return {
        "image": rng.standard_normal((n, *IMAGE_SHAPE), dtype=np.float32) * 0.01,
        "flux": rng.standard_normal((n, *SPECTRUM_SHAPE), dtype=np.float32) + 3.0,
        "ivar": rng.uniform(1.0, 4.0, (n, *SPECTRUM_SHAPE)).astype(np.float32),
        "mask": (rng.random((n, *SPECTRUM_SHAPE)) < 0.01).astype(np.uint8),
    }


def pairs_table(block: dict[str, np.ndarray], pixel: int, first_targetid: int) -> pa.Table:
    """A PAIRS_SCHEMA table of the block's rows in ``pixel``, all in the train split."""
    n = len(block["image"])
    scalars = {
        "targetid": np.arange(n, dtype=np.int64) + first_targetid,
        "healpix": np.full(n, pixel, dtype=np.int32),
        "split": np.array(["train"] * n, dtype=object),
    }
    columns = []
    for field in PAIRS_SCHEMA:
        if field.name in BIG:
            columns.append(encode_blob(field.name, block[field.name]))
        elif field.name in scalars:
            columns.append(pa.array(scalars[field.name], field.type))
        elif pa.types.is_string(field.type):
            columns.append(pa.array(["x"] * n, field.type))
        else:
            columns.append(pa.array(np.zeros(n), pa.float64()).cast(field.type))
    return pa.Table.from_arrays(columns, schema=PAIRS_SCHEMA)


def write_set(root: str, rows: int, n_files: int) -> str:
    """Write ``rows`` pairs in ``n_files`` partition files under ``root``; return the folder."""
    block = random_block(BLOCK_ROWS)
    layout = StorageLayout(root)
    per_file = rows // n_files
    for f in range(n_files):
        parts = [
            pairs_table(block, 1000 + f, 39627000000000 + f * 10**7 + start)
            for start in range(0, per_file, BLOCK_ROWS)
        ]
        write_pairs(layout, RELEASE, 1000 + f, pa.concat_tables(parts).slice(0, per_file))
    return layout.pairs_dir(RELEASE)


def as_tensors(batch: PairArrays) -> list[torch.Tensor]:
    """The batch's columns as torch tensors (zero copy)."""
    return [torch.from_numpy(getattr(batch, c)) for c in COLUMNS]


def ours(files: list[str], batch: int, epoch: int = 0, **kw) -> Callable[[], int]:
    """One epoch of a fresh PairsLoader into tensors; returns the pairs it produced."""
    index = build_index(files)

    def run() -> int:
        loader = PairsLoader(index, batch, seed=0, **kw)
        n = 0
        for b in loader.iter_epoch(epoch):
            n += len(as_tensors(b)[0])
        return n

    return run


def cached(files: list[str], batch: int) -> Callable[[], int]:
    """Later epochs of one PairsLoader that keeps the decoded set in memory."""
    loader = PairsLoader(build_index(files), batch, seed=0, shuffle_unit="row_group")
    epochs: Iterator[int] = iter(range(1_000_000))
    for _ in loader.iter_epoch(next(epochs)):  # the first epoch fills the cache
        pass

    def run() -> int:
        return sum(len(as_tensors(b)[0]) for b in loader.iter_epoch(next(epochs)))

    return run


def hf_streaming(shards: list[str], batch: int) -> Callable[[], int]:
    """``datasets`` streaming over the Parquet shards, format torch."""
    import datasets

    def run() -> int:
        ds = datasets.load_dataset(
            "parquet", data_files={"train": shards}, split="train", streaming=True
        )
        ds = ds.select_columns(COLUMNS).with_format("torch")
        return sum(len(b["image"]) for b in ds.iter(batch_size=batch, drop_last_batch=True))

    return run


def hf_map_style(shards: list[str], cache_dir: str) -> tuple[Rate, object]:
    """``datasets`` map-style: (the rate of its conversion into an Arrow cache, the dataset)."""
    import datasets

    t0, c0 = time.perf_counter(), time.process_time()
    ds = datasets.load_dataset(
        "parquet", data_files={"train": shards}, split="train", cache_dir=cache_dir
    )
    return Rate(len(ds) / (time.perf_counter() - t0), len(ds) / (time.process_time() - c0)), ds


def hf_batches(ds, batch: int, fmt: str, shuffled: bool) -> Callable[[], int]:
    """Batches of the map-style dataset from its Arrow cache (memory-mapped from disk)."""
    ds = ds.with_format(fmt, columns=COLUMNS)
    order = np.random.default_rng(0).permutation(len(ds))

    def run() -> int:
        n = 0
        for start in range(0, len(ds) - batch + 1, batch):
            rows = (
                order[start : start + batch].tolist() if shuffled else slice(start, start + batch)
            )
            n += len(ds[rows]["image"])
        return n

    return run


def our_reads(files: list[str]) -> Callable[[], int]:
    """Our reader alone: every row group of ``files`` decoded by ``read_pairs_split`` (page
    checksums verified, finiteness not checked: the loader checks its batches); no batches."""
    import pyarrow.parquet as pq

    from astroclip_core.tables.pairs import read_pairs_split

    groups = [(path, g) for path in files for g in range(pq.ParquetFile(path).num_row_groups)]

    def run() -> int:
        return sum(
            len(read_pairs_split(path, None, [g], check_finite=False)[0]) for path, g in groups
        )

    return run


def parquet_reads(files: list[str], verify: bool) -> Callable[[], int]:
    """Arrow alone: every row group of ``files`` read (memory-mapped), with or without its page
    checksums verified; no decoding, no batches."""
    import pyarrow.parquet as pq

    def run() -> int:
        n = 0
        for path in files:
            with pq.ParquetFile(path, memory_map=True, page_checksum_verification=verify) as f:
                for g in range(f.num_row_groups):
                    n += f.read_row_group(g, columns=COLUMNS).num_rows
        return n

    return run


@dataclass(frozen=True)
class Rate:
    """Pairs per second of wall time, and per second of this process's CPU time (all threads).

    On an idle core the two agree; on a shared machine the CPU-time rate is the steadier one.
    """

    wall: float
    cpu: float


def best_rate(fn: Callable[[], int], repeats: int) -> Rate:
    """Best pairs/s over ``repeats`` calls of ``fn`` (which returns the pairs it produced)."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        n = fn()
        wall.append(n / (time.perf_counter() - t0))
        cpu.append(n / (time.process_time() - c0))
    return Rate(max(wall), max(cpu))


def peak_rss_mib() -> float:
    """This process's peak RSS in MiB.

    VmHWM where /proc has it: ``getrusage``'s ru_maxrss survives exec, so a child started
    from a big parent reports at least the parent's RSS at the fork.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_epoch(pairs_dir: str, batch: int, window: int) -> None:
    """(Subprocess) one streaming epoch over ``pairs_dir``; print rows, pairs/s and peak RSS."""
    pin_one_core()
    files = [url for _, url in list_pairs_files(pairs_dir)]
    loader = PairsLoader(
        build_index(files),
        batch,
        seed=0,
        shuffle_window_rows=window,
        cache_max_bytes=0,
        shuffle_unit="row_group",
        prefetch_batches=4,
    )
    t0, c0 = time.perf_counter(), time.process_time()
    n = sum(len(as_tensors(b)[0]) for b in loader.iter_epoch(0))
    out = {"rows": loader.index.total_rows, "pairs": n}
    out.update(wall=n / (time.perf_counter() - t0), cpu=n / (time.process_time() - c0))
    out.update(peak_rss_mib=peak_rss_mib(), peak_resident_rows=loader.peak_resident_rows)
    print(json.dumps(out))


def memory(root: Path, pairs_dir: str, rows: int, batch: int, window: int) -> list[dict]:
    """Peak RSS of one streaming epoch over ``pairs_dir`` (``rows`` pairs in 4 files) and over
    8 times as many pairs in 32 files, each in a fresh subprocess."""
    results = []
    for scale in (1, 8):
        if scale > 1:
            pairs_dir = write_set(str(root / f"x{scale}"), scale * rows, 4 * scale)
        cmd = [sys.executable, __file__, "--child", pairs_dir, "--batch", str(batch)]
        out = subprocess.run([*cmd, "--mem-window", str(window)], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"child failed: {out.stderr}")
        results.append({"scale": scale, **json.loads(out.stdout.strip().splitlines()[-1])})
    return results


def run(rows: int, batch: int, window: int, repeats: int) -> None:
    """Build the data, time every reader, measure memory, print the table and the goals."""
    where = pin_one_core()
    from astroclip_core.publish.dataset import build_hf_dataset
    from astroclip_core.releases import Release

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp)
        pairs_dir = write_set(str(root), rows, 4)
        files = [url for _, url in list_pairs_files(pairs_dir)]
        hf_dir = StorageLayout(str(root)).hf_dir(RELEASE)
        build_hf_dataset(pairs_dir, hf_dir, Release(RELEASE, "fuji"))
        shards = list_shards(hf_dir, "train")
        no_cache = dict(cache_max_bytes=0, shuffle_unit="row_group")
        figures = {
            "ours, pairs Parquet": best_rate(ours(files, batch, **no_cache), repeats),
            "ours, pairs Parquet, prefetch 4": best_rate(
                ours(files, batch, prefetch_batches=4, **no_cache), repeats
            ),
            "ours, pairs Parquet, file unit": best_rate(
                ours(files, batch, cache_max_bytes=0), repeats
            ),
            "ours, published shards": best_rate(ours(shards, batch, **no_cache), repeats),
            "datasets streaming, shards, torch": best_rate(hf_streaming(shards, batch), repeats),
        }
        prepare_rate, ds = hf_map_style(shards, str(root / "hf_cache"))
        figures["datasets map-style: conversion"] = prepare_rate
        for fmt in ("torch", "numpy"):
            for shuffled in (True, False):
                name = (
                    f"datasets map-style cache, {fmt}, {'shuffled' if shuffled else 'contiguous'}"
                )
                figures[name] = best_rate(hf_batches(ds, batch, fmt, shuffled), repeats)
        figures["ours, in-memory cache (for the record)"] = best_rate(cached(files, batch), repeats)
        for verify in (True, False):
            name = f"Arrow row-group reads only, page CRC {'on' if verify else 'off'}"
            figures[name] = best_rate(parquet_reads(files, verify), repeats)
        figures["our row-group reads only, pairs Parquet"] = best_rate(our_reads(files), repeats)
        figures["our row-group reads only, shards"] = best_rate(our_reads(shards), repeats)
        del ds
        mem = memory(root, pairs_dir, rows, batch, window)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{rows} pairs, batch {batch}, best of {repeats} epochs, one core ({where})")
    print(f"load average at the end (1, 5, 15 min): {load}")
    print("| reader | pairs/s (wall) | pairs/s (CPU time) |\n|---|---|---|")
    for name, rate in figures.items():
        print(f"| {name} | {rate.wall:,.0f} | {rate.cpu:,.0f} |")
    print("\n| ratio | wall | CPU time |\n|---|---|---|")
    for name, (a, b) in _ratios(figures).items():
        print(f"| {name} | {a.wall / b.wall:.2f}x | {a.cpu / b.cpu:.2f}x |")
    print(f"\nmemory: one streaming epoch (window {window} rows, prefetch 4), fresh process")
    print("| rows | pairs/s (wall, CPU time) | peak RSS | peak decoded rows held |")
    print("|---|---|---|---|")
    for m in mem:
        print(
            f"| {m['rows']:,} ({m['scale']}x) | {m['wall']:,.0f}, {m['cpu']:,.0f} | "
            f"{m['peak_rss_mib']:,.0f} MiB | {m['peak_resident_rows']} |"
        )
    growth = mem[1]["peak_rss_mib"] / mem[0]["peak_rss_mib"] - 1
    print(f"peak RSS at 8x / at 1x: {growth:+.1%} (goal within 10%)")


def _ratios(figures: dict[str, Rate]) -> dict[str, tuple[Rate, Rate]]:
    """The comparisons against the goals: name -> (numerator, denominator)."""
    ours, shards = figures["ours, pairs Parquet, prefetch 4"], figures["ours, published shards"]
    streaming = figures["datasets streaming, shards, torch"]
    cache = figures["datasets map-style cache, torch, shuffled"]
    conversion = figures["datasets map-style: conversion"]
    # the map-style first epoch: its conversion, then one shuffled epoch from its cache
    first = Rate(
        *(1 / (1 / getattr(conversion, k) + 1 / getattr(cache, k)) for k in ("wall", "cpu"))
    )
    return {
        "ours (pairs, prefetch 4) / the 8,000 pairs/s goal": (ours, Rate(8000, 8000)),
        "ours (shards) / datasets streaming, same shards (goal >= 2)": (shards, streaming),
        "ours (shards) / datasets map-style first epoch": (shards, first),
        "ours (pairs) / datasets streaming (shards)": (ours, streaming),
        "ours (pairs) / datasets map-style first epoch": (ours, first),
        "ours (pairs) / datasets map-style Arrow cache, torch, shuffled": (ours, cache),
    }


def main() -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--mem-window", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the memory subprocess
    args = parser.parse_args()
    if args.child:
        child_epoch(args.child, args.batch, args.mem_window)
    else:
        run(args.rows, args.batch, args.mem_window, args.repeats)


if __name__ == "__main__":
    main()
