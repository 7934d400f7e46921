"""Arrow schemas of the pairs, interim matches and embeddings tables, and the encoding of the
pairs' big columns.

This module is the one owner of these schemas.

Encoding choice: the image, flux, ivar and mask columns are Arrow *fixed-size binary*
(Parquet FIXED_LEN_BYTE_ARRAY) holding the raw little-endian array bytes, with dtype and
shape recorded in the schema metadata. A batch decodes with one ``np.frombuffer`` over the
column's contiguous data buffer and no per-row Python work. Typed-list columns hold the
same values but decode several times slower; ``bench/bench_loader.py`` times the pairs table
against the published dataset's typed-list shards, and ``datasets``, on the machine it runs on
(figures in the README). The Hugging Face dataset re-encodes them as typed Array3D / Sequence
features for people who load it with ``datasets``; :func:`decode_array_column` reads both.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from astroclip_core.formats.desi import N_WAVELENGTH

IMAGE_BANDS = ("g", "r", "z")
IMAGE_SIZE_PIX = 152
IMAGE_SHAPE = (3, IMAGE_SIZE_PIX, IMAGE_SIZE_PIX)  # (band, y, x), bands g, r, z
SPECTRUM_SHAPE = (N_WAVELENGTH,)

# column -> (numpy dtype, shape per row)
BLOB_COLUMNS: dict[str, tuple[str, tuple[int, ...]]] = {
    "image": ("<f4", IMAGE_SHAPE),
    "flux": ("<f4", SPECTRUM_SHAPE),
    "ivar": ("<f4", SPECTRUM_SHAPE),
    "mask": ("|u1", SPECTRUM_SHAPE),
}


def _blob_type(column: str) -> pa.DataType:
    dtype, shape = BLOB_COLUMNS[column]
    return pa.binary(int(np.dtype(dtype).itemsize * np.prod(shape)))


PAIRS_FIELDS: list[pa.Field] = [
    pa.field("targetid", pa.int64(), nullable=False),
    pa.field("healpix", pa.int32(), nullable=False),
    pa.field("ra", pa.float64()),  # imaging source, deg
    pa.field("dec", pa.float64()),
    pa.field("target_ra", pa.float64()),  # DESI target, deg
    pa.field("target_dec", pa.float64()),
    pa.field("sep_arcsec", pa.float32()),
    pa.field("z", pa.float64()),
    pa.field("zerr", pa.float64()),
    pa.field("survey", pa.string()),
    pa.field("program", pa.string()),
    pa.field("ls_release", pa.int16()),
    pa.field("brickid", pa.int32()),
    pa.field("objid", pa.int32()),
    pa.field("flux_g", pa.float32()),  # nanomaggies
    pa.field("flux_r", pa.float32()),
    pa.field("flux_z", pa.float32()),
    pa.field("ebv", pa.float32()),
    pa.field("morphtype", pa.string()),
    pa.field("image", _blob_type("image"), nullable=False),
    pa.field("flux", _blob_type("flux"), nullable=False),
    pa.field("ivar", _blob_type("ivar"), nullable=False),
    pa.field("mask", _blob_type("mask"), nullable=False),
    pa.field("split", pa.string(), nullable=False),
]


def blob_metadata() -> dict[bytes, bytes]:
    """Schema metadata that records each blob column's dtype, shape and units."""
    from astroclip_core.formats.desi import WAVELENGTH

    meta = {
        col: {"dtype": dtype, "shape": list(shape)} for col, (dtype, shape) in BLOB_COLUMNS.items()
    }
    meta["image"].update(bands=list(IMAGE_BANDS), unit="nanomaggy", pixscale_arcsec=0.262)
    meta["flux"].update(unit="1e-17 erg/s/cm2/Angstrom")
    meta["ivar"].update(unit="1/(1e-17 erg/s/cm2/Angstrom)^2")
    meta["mask"].update(meaning="nonzero = bad pixel")
    grid = {
        "wavelength_min_angstrom": float(WAVELENGTH[0]),
        "wavelength_max_angstrom": float(WAVELENGTH[-1]),
        "wavelength_step_angstrom": float(WAVELENGTH[1] - WAVELENGTH[0]),
        "n_wavelength": int(WAVELENGTH.size),
    }
    return {
        b"astroclip.blobs": json.dumps(meta).encode(),
        b"astroclip.grid": json.dumps(grid).encode(),
    }


PAIRS_SCHEMA = pa.schema(PAIRS_FIELDS, metadata=blob_metadata())

# The interim ``matches`` table of one partition (ingest/match.py writes it, ingest/pairs.py
# reads it): per matched spectrum, the nearest imaging source's position and catalogue columns
# and the separation, typed as the same columns of the pairs table.
_MATCH_POSITION = ("targetid", "ra", "dec", "sep_arcsec")
_MATCH_SOURCE = ("ls_release", "brickid", "objid", "flux_g", "flux_r", "flux_z", "ebv", "morphtype")
MATCHES_SCHEMA = pa.schema([PAIRS_SCHEMA.field(n) for n in (*_MATCH_POSITION, *_MATCH_SOURCE)])


def encode_blob(column: str, values: np.ndarray) -> pa.FixedSizeBinaryArray:
    """Encode an (N, *shape) array as the fixed-size binary column ``column`` (zero copy)."""
    dtype, shape = BLOB_COLUMNS[column]
    arr = np.ascontiguousarray(values, dtype=np.dtype(dtype))
    if arr.shape[1:] != shape:
        raise ValueError(f"column {column!r} needs rows of shape {shape}, got {arr.shape[1:]}")
    width = int(arr.itemsize * np.prod(shape))
    # An explicit row width: reshape(0, -1) of an empty batch is ambiguous for numpy.
    buf = pa.py_buffer(arr.reshape(len(arr), int(np.prod(shape))).view(np.uint8))
    return pa.Array.from_buffers(pa.binary(width), len(arr), [None, buf])


def decode_blob(column: str, chunked: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Decode a fixed-size binary column into an (N, *shape) numpy array.

    One ``frombuffer`` per Arrow chunk; the result is a view when the column has one chunk.
    """
    dtype, shape = BLOB_COLUMNS[column]
    chunks = chunked.chunks if isinstance(chunked, pa.ChunkedArray) else [chunked]
    parts = []
    for chunk in chunks:
        if chunk.null_count:
            raise ValueError(f"column {column!r} has {chunk.null_count} null rows")
        width = chunk.type.byte_width
        data = chunk.buffers()[1]
        raw = np.frombuffer(data, dtype=np.uint8, count=width * (chunk.offset + len(chunk)))
        raw = raw[width * chunk.offset :]
        parts.append(raw.view(np.dtype(dtype)).reshape((len(chunk), *shape)))
    if not parts:
        return np.empty((0, *shape), dtype=np.dtype(dtype))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def decode_array_column(column: str, chunked: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Decode blob column ``column`` into an (N, *shape) array from either encoding.

    The pairs table stores it as fixed-size binary (:func:`decode_blob`). The published
    Hugging Face dataset (``astroclip_core/publish/features.py``) stores the same values as
    typed lists: ``image`` as list<list<list<float32>>> (the storage of ``datasets``' Array3D
    extension type), ``flux``/``ivar``/``mask`` as fixed-size lists. Lists decode by flattening
    their offsets away (a view per chunk) after checking that every list has the length of its
    axis. Raises ValueError naming the column for nulls, ragged lists or a wrong value type.
    """
    chunks = chunked.chunks if isinstance(chunked, pa.ChunkedArray) else [chunked]
    if chunks and pa.types.is_fixed_size_binary(chunks[0].type):
        return decode_blob(column, chunked)
    dtype, shape = BLOB_COLUMNS[column]
    parts = [_list_values(column, chunk, np.dtype(dtype), shape) for chunk in chunks]
    if not parts:
        return np.empty((0, *shape), dtype=np.dtype(dtype))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _list_values(
    column: str, chunk: pa.Array, dtype: np.dtype, shape: tuple[int, ...]
) -> np.ndarray:
    # (N, *shape) view of one chunk of (nested) lists of ``dtype``
    n_rows = len(chunk)
    values = chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk
    for axis, size in enumerate(shape):
        if values.null_count:
            raise ValueError(f"column {column!r} has {values.null_count} null lists")
        if pa.types.is_fixed_size_list(values.type):
            ok = values.type.list_size == size
        elif pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            ok = bool(np.all(np.diff(values.offsets.to_numpy()) == size))
        else:
            raise ValueError(f"column {column!r} is {chunk.type}, not lists of shape {shape}")
        if not ok:
            raise ValueError(f"column {column!r}: axis {axis + 1} lists are not all of {size}")
        values = values.flatten()  # honours the chunk's offset and slicing
    if values.null_count or values.type.to_pandas_dtype() != dtype:
        raise ValueError(f"column {column!r} holds {values.type} values, expected {dtype}")
    return values.to_numpy(zero_copy_only=True).reshape(n_rows, *shape)


EMBEDDINGS_BASE_FIELDS: list[pa.Field] = [
    pa.field("targetid", pa.int64(), nullable=False),
    pa.field("healpix", pa.int32(), nullable=False),
    pa.field("ra", pa.float64()),
    pa.field("dec", pa.float64()),
    pa.field("z", pa.float64()),
    pa.field("split", pa.string()),
]


def embeddings_schema(dim: int) -> pa.Schema:
    """Schema of the embeddings table for ``dim``-dimensional embeddings.

    Embeddings are fixed-size lists of float32 (small: D values) so that polars, DuckDB and
    pyarrow read them as arrays/lists directly.
    """
    return pa.schema(
        [
            *EMBEDDINGS_BASE_FIELDS,
            pa.field("image_embedding", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("spectrum_embedding", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("model", pa.string(), nullable=False),
        ]
    )


def object_embeddings_schema(dim: int) -> pa.Schema:
    """Schema of the embeddings of objects from outside the pipeline (``astroclip embed``).

    The embeddings schema with a ``source`` column (``coadd:<file>``, ``cutout:<file>`` or
    ``radec:<table>:<row>``) and with nulls where a value is unknown: ``targetid`` (no DESI
    target), ``z``, ``split``, and the embedding of a modality the object lacks.
    """
    return pa.schema(
        [
            pa.field("targetid", pa.int64()),
            pa.field("healpix", pa.int32(), nullable=False),
            pa.field("ra", pa.float64()),
            pa.field("dec", pa.float64()),
            pa.field("z", pa.float64()),
            pa.field("split", pa.string()),
            pa.field("image_embedding", pa.list_(pa.float32(), dim)),
            pa.field("spectrum_embedding", pa.list_(pa.float32(), dim)),
            pa.field("model", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
        ]
    )


# The per-partition, per-stage failures table: what could not be fetched, and why. Rows are
# built by astroclip_core.sources.fetch.failures_table; astroclip_core.tables.interim writes
# and reads it.
FAILURES_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("url", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("attempts", pa.int32(), nullable=False),
    ]
)
