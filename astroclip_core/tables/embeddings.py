"""Reading and writing the embeddings table (one Parquet file per model and nside-16 pixel).

This module is the one reader and writer of the embeddings table; the schema is
:func:`astroclip_core.tables.schemas.embeddings_schema`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from astroclip_core import fsio
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.schemas import embeddings_schema, object_embeddings_schema


def embeddings_table(
    pairs: pa.Table, image_emb: np.ndarray, spectrum_emb: np.ndarray, model: str
) -> pa.Table:
    """Rows of the embeddings schema for ``pairs`` (same order) and their (N, D) embeddings."""
    n, dim = image_emb.shape
    if spectrum_emb.shape != (n, dim) or pairs.num_rows != n:
        raise ValueError(
            f"{pairs.num_rows} pairs but embeddings {image_emb.shape} / {spectrum_emb.shape}"
        )
    schema = embeddings_schema(dim)

    def fsl(values: np.ndarray) -> pa.FixedSizeListArray:
        flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
        return pa.FixedSizeListArray.from_arrays(flat, dim)

    cols = {name: pairs.column(name) for name in ("targetid", "healpix", "ra", "dec", "z", "split")}
    cols["image_embedding"] = fsl(image_emb)
    cols["spectrum_embedding"] = fsl(spectrum_emb)
    cols["model"] = pa.array([model] * n, pa.string())
    return pa.table(cols).cast(schema)


def write_embeddings(
    layout: StorageLayout, release: str, model: str, pixel: int, table: pa.Table
) -> tuple[str, int]:
    """Write one partition's embeddings atomically, replacing any previous file; (url, bytes)."""
    url = layout.embeddings_file(release, model, pixel)
    return url, fsio.atomic_write_parquet(url, table, compression="zstd")


def object_embeddings_table(
    targetid: np.ndarray,
    healpix: np.ndarray,
    ra_deg: np.ndarray,
    dec_deg: np.ndarray,
    z: np.ndarray,
    image_emb: np.ndarray,
    spectrum_emb: np.ndarray,
    model: str,
    source: list[str],
) -> pa.Table:
    """Rows of :func:`object_embeddings_schema` for N objects.

    ``targetid`` < 0 and NaN ``z`` become null; an embedding row (of the (N, D) arrays) that
    is NaN becomes a null embedding (the object lacks that modality).
    """
    n, dim = image_emb.shape
    if spectrum_emb.shape != (n, dim) or len(source) != n or len(targetid) != n:
        raise ValueError(
            f"{len(source)} sources, {len(targetid)} targetids but embeddings "
            f"{image_emb.shape} / {spectrum_emb.shape}"
        )

    def fsl(values: np.ndarray) -> pa.FixedSizeListArray:
        missing = np.isnan(values).any(axis=1)  # (N,) rows without this modality
        flat = pa.array(np.nan_to_num(np.ascontiguousarray(values, np.float32)).reshape(-1))
        return pa.FixedSizeListArray.from_arrays(
            flat, dim, mask=pa.array(missing) if missing.any() else None
        )

    targetid = np.asarray(targetid, np.int64)
    z = np.asarray(z, np.float64)
    return pa.table(
        {
            "targetid": pa.array(targetid, mask=targetid < 0),
            "healpix": pa.array(np.asarray(healpix, np.int32)),
            "ra": pa.array(np.asarray(ra_deg, np.float64)),
            "dec": pa.array(np.asarray(dec_deg, np.float64)),
            "z": pa.array(z, mask=~np.isfinite(z)),
            "split": pa.nulls(n, pa.string()),
            "image_embedding": fsl(image_emb),
            "spectrum_embedding": fsl(spectrum_emb),
            "model": pa.array([model] * n, pa.string()),
            "source": pa.array(source, pa.string()),
        }
    ).cast(object_embeddings_schema(dim))


def write_object_embeddings(url: str, table: pa.Table) -> int:
    """Write an object-embeddings table to ``url`` atomically (replacing it); its bytes."""
    return fsio.atomic_write_parquet(url, table, compression="zstd")


def read_embeddings(url: str, columns: list[str] | None = None) -> pa.Table:
    """Read an embeddings Parquet file or hive folder (every ``*.parquet`` below it).

    The folder is read without hive partitioning: each file already holds its ``healpix``
    column. Raises FileNotFoundError naming ``url`` when nothing is there.
    """
    fs, path = fsio.filesystem(url)
    if not fs.exists(path):
        raise FileNotFoundError(f"no embeddings at {url}")
    dataset = fsio.parquet_dataset(url)
    if not dataset.files:
        raise FileNotFoundError(f"no Parquet files under {url}")
    return fsio.read_dataset(dataset, columns)


def embedding_matrix(table: pa.Table, column: str) -> np.ndarray:
    """(N, D) float32 array of a fixed-size-list (or equal-length list) embedding column."""
    if column not in table.column_names:
        raise ValueError(f"embeddings table lacks column {column!r}")
    arr = table.column(column).combine_chunks()
    if arr.null_count:
        raise ValueError(f"column {column!r} has {arr.null_count} null rows")
    if pa.types.is_fixed_size_list(arr.type):
        dim = arr.type.list_size
    elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        if lengths.size and (lengths != lengths[0]).any():
            raise ValueError(f"column {column!r} has rows of different lengths")
        dim = int(lengths[0]) if lengths.size else 0
    else:
        raise ValueError(f"column {column!r} has type {arr.type}, not a list of floats")
    values = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(len(arr), dim)
