"""Arrow schemas of the pairs, interim matches and embeddings tables, and the encoding of the
pairs' big columns.

This module is the one owner of these schemas.

Encoding choice: the image, flux, ivar and mask columns are Arrow *fixed-size binary*
(Parquet FIXED_LEN_BYTE_ARRAY) holding the raw little-endian array bytes, with dtype and
shape recorded in the schema metadata. A batch decodes with one ``np.frombuffer`` over the
column's contiguous data buffer and no per-row Python work. Fixed-size-list columns hold the
same values but decode an order of magnitude slower; ``bench/bench_loader.py`` times both, and
``datasets``, on the machine it runs on (figures in the README). The Hugging Face dataset
re-encodes them as typed Array3D / Sequence features for people who load it with ``datasets``.
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
    buf = pa.py_buffer(arr.reshape(len(arr), -1).view(np.uint8))
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
