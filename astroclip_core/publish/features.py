"""Typed Hugging Face features of the published dataset, and the pairs -> dataset re-encoding.

The pairs table stores image/flux/ivar/mask as fixed-size binary blobs (fast to decode, see
``astroclip_core.tables.schemas``). People who load the dataset with ``datasets`` should get
typed arrays instead, so each shard re-encodes them as the Arrow types of the ``datasets``
features, exactly as ``datasets`` itself writes them:

- ``image``: ``Array3D(shape=(3, 152, 152), dtype="float32")``, the ``datasets`` Arrow
  extension type over storage ``list<list<list<float32>>>``;
- ``flux``, ``ivar``: ``List(float32, length=7781)``, stored as ``fixed_size_list<float32>[7781]``;
- ``mask``: ``List(uint8, length=7781)``.

Every list is built from the blob's flat buffer with computed offsets (no per-row Python),
and the ``huggingface`` schema metadata carries the features, so a shard read on its own still
yields the typed features in ``datasets``, while pyarrow, polars and DuckDB see nested lists.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from datasets import Array3D, Features, List, Value

from astroclip_core.tables.schemas import IMAGE_SHAPE, PAIRS_SCHEMA, SPECTRUM_SHAPE, decode_blob

# Scalar columns copied from the pairs table unchanged, in published order.
SCALAR_COLUMNS: tuple[str, ...] = (
    "targetid",
    "healpix",
    "ra",
    "dec",
    "target_ra",
    "target_dec",
    "sep_arcsec",
    "z",
    "zerr",
    "survey",
    "program",
    "ls_release",
    "brickid",
    "objid",
    "flux_g",
    "flux_r",
    "flux_z",
    "ebv",
    "morphtype",
    "split",
)
ARRAY_COLUMNS: tuple[str, ...] = ("image", "flux", "ivar", "mask")

# Largest shard whose Array3D offsets fit in int32: rows * 3 * 152 * 152 < 2**31.
MAX_ROWS_PER_SHARD = (2**31 - 1) // int(np.prod(IMAGE_SHAPE))


def hf_features() -> Features:
    """The ``datasets.Features`` of the published dataset (scalars first, then arrays)."""
    scalars = {
        name: Value(_datasets_dtype(PAIRS_SCHEMA.field(name).type)) for name in SCALAR_COLUMNS
    }
    n_wave = SPECTRUM_SHAPE[0]
    arrays = {
        "image": Array3D(shape=IMAGE_SHAPE, dtype="float32"),
        "flux": List(Value("float32"), length=n_wave),
        "ivar": List(Value("float32"), length=n_wave),
        "mask": List(Value("uint8"), length=n_wave),
    }
    return Features({**scalars, **arrays})


def _datasets_dtype(arrow_type: pa.DataType) -> str:
    if pa.types.is_string(arrow_type):
        return "string"
    return str(arrow_type)  # int64, int32, int16, float64, float32 share their names


def hf_schema() -> pa.Schema:
    """Arrow schema of a shard, as ``datasets`` writes it: feature types + ``huggingface`` metadata.

    ``image`` is the Array3D extension type; readers without ``datasets`` see its storage type
    ``list<list<list<float32>>>``.
    """
    return hf_features().arrow_schema


def _nested_lists(flat: np.ndarray, shape: tuple[int, ...]) -> pa.ListArray:
    """Nest a flat (N * prod(shape),) array into N rows of list<list<...>> of ``shape``.

    Built innermost first: level k has N * prod(shape[:k]) lists of length shape[k].
    """
    n_rows = flat.size // int(np.prod(shape))
    array: pa.Array = pa.array(flat)  # zero copy for a contiguous numeric array
    for depth in range(len(shape) - 1, -1, -1):
        n_lists = n_rows * int(np.prod(shape[:depth]))
        offsets = pa.array(np.arange(n_lists + 1, dtype=np.int32) * np.int32(shape[depth]))
        array = pa.ListArray.from_arrays(offsets, array)
    return array


def to_hf_table(pairs: pa.Table) -> pa.Table:
    """Re-encode a pairs table (PAIRS_SCHEMA, blob columns) as a shard table of :func:`hf_schema`."""
    if pairs.num_rows > MAX_ROWS_PER_SHARD:
        raise ValueError(f"{pairs.num_rows} rows exceed the shard limit {MAX_ROWS_PER_SHARD}")
    schema = hf_schema()
    columns: list[pa.Array | pa.ChunkedArray] = [pairs.column(name) for name in SCALAR_COLUMNS]
    image = decode_blob("image", pairs.column("image"))  # (N, 3, 152, 152) float32
    storage = _nested_lists(image.reshape(-1), IMAGE_SHAPE)
    columns.append(pa.ExtensionArray.from_storage(schema.field("image").type, storage))
    for name in ("flux", "ivar", "mask"):
        values = decode_blob(name, pairs.column(name))  # (N, 7781)
        columns.append(
            pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
        )
    return pa.Table.from_arrays(columns, schema=schema)
