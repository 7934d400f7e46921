"""Reading and writing the embeddings table (one Parquet file per model and nside-16 pixel)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from astroclip_core import fsio
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.schemas import embeddings_schema


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
