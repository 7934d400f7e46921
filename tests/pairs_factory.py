"""Tiny synthetic pairs tables for tests: random but finite values in PAIRS_SCHEMA.

``write_pairs(root, release, rows_per_pixel)`` writes ``StorageLayout.pairs_file`` of each pixel
under a local folder or fsspec URL (through atomic_write_parquet) and returns
the concatenated table, so tests can compare what they publish against what went in.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from astroclip_core.fsio import atomic_write_parquet
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.schemas import (
    IMAGE_SHAPE,
    PAIRS_SCHEMA,
    SPECTRUM_SHAPE,
    encode_blob,
)
from astroclip_core.tables.splits import split_of


def make_pairs(
    n_rows: int, pixel: int, seed: int = 0, first_targetid: int = 39627000000000000
) -> pa.Table:
    """A pairs table of ``n_rows`` random finite rows in nside-16 pixel ``pixel``."""
    rng = np.random.default_rng(seed)
    targetid = first_targetid + np.arange(n_rows, dtype=np.int64) * 7919
    ra = rng.uniform(150.0, 151.0, n_rows)
    dec = rng.uniform(2.0, 3.0, n_rows)
    image = rng.normal(0.0, 0.1, (n_rows, *IMAGE_SHAPE)).astype(np.float32)  # (N, 3, 152, 152)
    flux = rng.normal(1.0, 0.5, (n_rows, *SPECTRUM_SHAPE)).astype(np.float32)  # (N, 7781)
    ivar = rng.uniform(0.1, 10.0, (n_rows, *SPECTRUM_SHAPE)).astype(np.float32)
    mask = (rng.uniform(size=(n_rows, *SPECTRUM_SHAPE)) < 0.05).astype(np.uint8)
    columns = {
        "targetid": pa.array(targetid, pa.int64()),
        "healpix": pa.array(np.full(n_rows, pixel, dtype=np.int32)),
        "ra": pa.array(ra),
        "dec": pa.array(dec),
        "target_ra": pa.array(ra + rng.normal(0, 1e-5, n_rows)),
        "target_dec": pa.array(dec + rng.normal(0, 1e-5, n_rows)),
        "sep_arcsec": pa.array(rng.uniform(0, 1, n_rows).astype(np.float32)),
        "z": pa.array(rng.uniform(0.01, 0.8, n_rows)),
        "zerr": pa.array(rng.uniform(1e-5, 1e-4, n_rows)),
        "survey": pa.array(["sv3"] * n_rows),
        "program": pa.array(["bright"] * n_rows),
        "ls_release": pa.array(np.full(n_rows, 9010, dtype=np.int16)),
        "brickid": pa.array(rng.integers(1, 600000, n_rows, dtype=np.int32)),
        "objid": pa.array(rng.integers(0, 5000, n_rows, dtype=np.int32)),
        "flux_g": pa.array(rng.uniform(1, 50, n_rows).astype(np.float32)),
        "flux_r": pa.array(rng.uniform(1, 50, n_rows).astype(np.float32)),
        "flux_z": pa.array(rng.uniform(1, 50, n_rows).astype(np.float32)),
        "ebv": pa.array(rng.uniform(0, 0.1, n_rows).astype(np.float32)),
        "morphtype": pa.array(rng.choice(["REX", "EXP", "DEV", "SER"], n_rows).tolist()),
        "image": encode_blob("image", image),
        "flux": encode_blob("flux", flux),
        "ivar": encode_blob("ivar", ivar),
        "mask": encode_blob("mask", mask),
        "split": pa.array(split_of(targetid).tolist()),
    }
    return pa.Table.from_arrays([columns[f.name] for f in PAIRS_SCHEMA], schema=PAIRS_SCHEMA)


def write_pairs(root: str, release: str, rows_per_pixel: dict[int, int], seed: int = 0) -> pa.Table:
    """Write one pairs file per pixel under data root ``root``; return all rows concatenated."""
    layout = StorageLayout(root)
    tables = []
    for i, (pixel, n_rows) in enumerate(sorted(rows_per_pixel.items())):
        table = make_pairs(
            n_rows, pixel, seed=seed + i, first_targetid=39627000000000000 + i * 10**9
        )
        atomic_write_parquet(layout.pairs_file(release, pixel), table)
        tables.append(table)
    return pa.concat_tables(tables)
