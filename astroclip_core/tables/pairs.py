"""Reading and writing the pairs table: one Parquet file per release and nside-16 pixel.

This module is the one reader and writer of the pairs table. Paths come from
:mod:`astroclip_core.storage`; the schema and the blob encoding from
:mod:`astroclip_core.tables.schemas`. A write replaces the partition's file atomically and
never appends. Readers come in three shapes: Arrow tables (:func:`read_pairs`,
:func:`read_pairs_columns`, :func:`iter_pairs_batches`), decoded arrays for training
(:class:`PairArrays`, :func:`read_pairs_file`, :func:`read_pairs_split`) and per-galaxy views
for figures (:func:`pairs_lookup`).

The training readers (:func:`count_split_rows`, :func:`read_pairs_split`) also read the shards
of the published Hugging Face dataset (``hf/<release>/data/*.parquet``): those hold the same
``targetid``, ``z`` and ``split`` columns, and the big columns as typed lists instead of
fixed-size binary, which :func:`decode_pairs` decodes too. They read whole files or single row
groups, with Arrow's own memory-mapped reader for local files; the float columns of a local
file come straight from their pages (:mod:`~astroclip_core.tables.parquet_pages` for the
pairs' blobs, :mod:`~astroclip_core.tables.parquet_lists` for the shards' lists), page
checksums verified there as Arrow verifies the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from astroclip_core import fsio
from astroclip_core.formats import FormatError
from astroclip_core.storage import StorageLayout, partition_glob, pixel_from_path
from astroclip_core.tables.parquet_lists import read_lists
from astroclip_core.tables.parquet_pages import read_plain_blobs
from astroclip_core.tables.schemas import (
    BLOB_COLUMNS,
    PAIRS_SCHEMA,
    decode_array_column,
    decode_blob,
)

# Row groups of ~256 pairs (~80 MB) keep reads streaming without huge pages.
PAIRS_ROW_GROUP_SIZE = 256
# The columns a training batch decodes, in :class:`PairArrays` field order.
PAIR_ARRAY_COLUMNS = ("targetid", "z", "image", "flux", "ivar", "mask")
# The columns a figure shows of one galaxy (:class:`PairView`).
PAIR_VIEW_COLUMNS = ["targetid", "z", "image", "flux", "mask"]
# The float blobs are noise: zstd barely shrinks them and makes them several times slower to
# read on one core, so they stay uncompressed. Dictionaries only for the few-valued strings (a
# blob never repeats).
_UNCOMPRESSED = ("image", "flux", "ivar")
_WRITE_OPTIONS: dict = {
    "row_group_size": PAIRS_ROW_GROUP_SIZE,
    "compression": {f.name: "none" if f.name in _UNCOMPRESSED else "zstd" for f in PAIRS_SCHEMA},
    "compression_level": {f.name: 1 for f in PAIRS_SCHEMA if f.name not in _UNCOMPRESSED},
    "use_dictionary": ["survey", "program", "morphtype", "split"],
}


@dataclass(frozen=True)
class PairsWrite:
    """What one partition write produced."""

    path: str
    n_rows: int
    size_bytes: int


def conform_pairs(table: pa.Table) -> pa.Table:
    """Select and cast ``table``'s columns to :data:`PAIRS_SCHEMA` (raises on missing columns)."""
    missing = [f.name for f in PAIRS_SCHEMA if f.name not in table.column_names]
    if missing:
        raise ValueError(f"pairs table lacks columns {missing}")
    return table.select(PAIRS_SCHEMA.names).cast(PAIRS_SCHEMA)


def write_pairs(layout: StorageLayout, release: str, pixel: int, table: pa.Table) -> PairsWrite:
    """Write one partition's pairs, replacing any previous file; rows sorted by targetid."""
    table = conform_pairs(table)
    if table.num_rows:
        table = table.take(pc.sort_indices(table, [("targetid", "ascending")]))
    url = layout.pairs_file(release, pixel)
    size = fsio.atomic_write_parquet(url, table, **_WRITE_OPTIONS)
    return PairsWrite(url, table.num_rows, size)


def list_pairs_files(pairs_dir: str) -> list[tuple[int, str]]:
    """``(pixel, url)`` of every partition file under the pairs folder ``pairs_dir``, by pixel.

    ``pairs_dir`` is a local path or fsspec URL. Raises FileNotFoundError naming the folder when
    it holds no partition file, FormatError for a partition folder that is not a pixel.
    """
    fs, root = fsio.filesystem(pairs_dir)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    found = []
    for path in fs.glob(partition_glob(root)):
        try:
            pixel = pixel_from_path(path)
        except ValueError as err:
            raise FormatError(path, str(err)) from None
        url = path if fsio.is_local(pairs_dir) else f"{protocol}://{path.lstrip('/')}"
        found.append((pixel, url))
    if not found:
        raise FileNotFoundError(f"no pairs files under {partition_glob(pairs_dir)}")
    return sorted(found)


def read_pairs(url: str, columns: list[str] | None = None) -> pa.Table:
    """Read one pairs Parquet file (local path or fsspec URL)."""
    return fsio.read_parquet(url, columns)


def read_pairs_columns(pairs_dir: str, columns: list[str]) -> pa.Table:
    """``columns`` of every pairs file under ``pairs_dir``, concatenated in pixel order."""
    return pa.concat_tables([read_pairs(url, columns) for _, url in list_pairs_files(pairs_dir)])


def check_pairs_schema(url: str, schema: pa.Schema) -> None:
    """Raise FormatError unless ``schema`` has every PAIRS_SCHEMA column with its type."""
    for field in PAIRS_SCHEMA:
        if field.name not in schema.names:
            raise FormatError(url, f"pairs file lacks column {field.name!r}")
        found = schema.field(field.name).type
        if not found.equals(field.type):
            raise FormatError(url, f"column {field.name!r} has type {found}, expected {field.type}")


def iter_pairs_batches(url: str, columns: list[str], batch_rows: int) -> Iterator[pa.Table]:
    """Batches of ``batch_rows`` rows of one pairs file, after checking its whole schema."""
    check_pairs_schema(url, fsio.parquet_schema(url))
    for batch in fsio.iter_parquet_batches(url, batch_rows, columns):
        yield pa.Table.from_batches([batch])


@dataclass(frozen=True)
class PairArrays:
    """Decoded pairs, row i of every array is one galaxy."""

    targetid: np.ndarray  # (N,) int64
    z: np.ndarray  # (N,) float64
    image: np.ndarray  # (N, 3, 152, 152) float32 nanomaggies, bands g, r, z
    flux: np.ndarray  # (N, 7781) float32, 1e-17 erg/s/cm2/A
    ivar: np.ndarray  # (N, 7781) float32
    mask: np.ndarray  # (N, 7781) uint8, nonzero = bad

    def __len__(self) -> int:
        return len(self.targetid)

    def take(self, rows: np.ndarray) -> PairArrays:
        """The rows at positions ``rows`` (copies)."""
        return PairArrays(*(getattr(self, c)[rows] for c in PAIR_ARRAY_COLUMNS))


def decode_pairs(
    table: pa.Table,
    source: str = "<table>",
    decoded: Mapping[str, np.ndarray] | None = None,
    check_finite: bool = True,
) -> PairArrays:
    """Decode a pairs table (PAIRS_SCHEMA columns) into arrays; non-finite pixels raise unless
    ``check_finite`` is False (the caller checks, see :func:`check_finite_pairs`).

    ``decoded`` holds big columns already decoded (N, *shape), which ``table`` may then lack.
    """
    decoded = decoded or {}
    missing = [c for c in PAIR_ARRAY_COLUMNS if c not in table.column_names and c not in decoded]
    if missing:
        raise FormatError(source, f"pairs table lacks columns {missing}")
    big = {
        c: decoded[c] if c in decoded else _decode_column(table, c, source)
        for c in ("image", "flux", "ivar", "mask")
    }
    arrays = PairArrays(
        targetid=table.column("targetid").to_numpy(),
        z=table.column("z").to_numpy(zero_copy_only=False).astype(np.float64),
        **big,
    )
    if check_finite:
        check_finite_pairs(arrays, source)
    return arrays


def check_finite_pairs(arrays: PairArrays, source: str) -> None:
    """Raise FormatError naming ``source`` when an image, flux or ivar value is not finite."""
    for name in ("image", "flux", "ivar"):
        values = getattr(arrays, name)
        # A sum is finite when every value is (one fast pass, float32 for speed: an overflow to
        # inf only sends it to the exact count); count only when it is not.
        if not np.isfinite(values.sum()):
            bad = int(np.count_nonzero(~np.isfinite(values)))
            if bad:
                raise FormatError(source, f"column {name!r} has {bad} non-finite values")


def _decode_column(table: pa.Table, name: str, source: str) -> np.ndarray:
    try:
        return decode_array_column(name, table.column(name))
    except ValueError as err:
        raise FormatError(source, str(err)) from err


def read_pairs_file(path: str, split: str | None = None) -> PairArrays:
    """Decode one pairs file, only the rows of ``split`` when given."""
    arrays, rows = read_pairs_split(path, split)
    return arrays if split is None else arrays.take(rows)


def read_pairs_split(
    path: str,
    split: str | None,
    row_groups: Sequence[int] | None = None,
    check_finite: bool = True,
) -> tuple[PairArrays, np.ndarray]:
    """All rows of one pairs file (or of its ``row_groups``) decoded, and the positions (K,) of
    the ``split`` rows among them (every position when ``split`` is None).

    ``path`` may also be a shard of the published dataset. The arrays are views of the read
    (or, for a local file's uncompressed blobs, of the mapped file) when it reads one row
    group; a FormatError names the file when it cannot be read, decoded or fails a page
    checksum. ``check_finite`` as in :func:`decode_pairs`.
    """
    columns = [*PAIR_ARRAY_COLUMNS, "split"]
    with fsio.open_parquet(path) as parquet:
        _check_columns(path, parquet, columns)
        groups = list(range(parquet.num_row_groups) if row_groups is None else row_groups)
        blobs = _plain_blob_columns(path, parquet, groups)
        try:
            rest = [c for c in columns if c not in blobs]
            table = parquet.read_row_groups(groups, rest) if groups else parquet.read(rest)
        except fsio.PARQUET_ERRORS as err:
            raise FormatError(path, fsio.parquet_problem(err)) from err
    if split is None:
        rows = np.arange(table.num_rows)
    else:
        rows = np.flatnonzero(table.column("split").to_numpy(zero_copy_only=False) == split)
    arrays = decode_pairs(table.drop_columns(["split"]), path, blobs, check_finite)
    return arrays, rows


def _plain_blob_columns(
    path: str, parquet: pq.ParquetFile, groups: list[int]
) -> dict[str, np.ndarray]:
    # The big columns of a local file read from their pages, each (N, *shape): a pairs file's
    # uncompressed blobs as views of the mapped file (parquet_pages; mask is zstd and left to
    # Arrow), a published shard's lists decoded without Arrow's level materialisation
    # (parquet_lists); both verify page CRCs. A column stored otherwise is left to Arrow.
    if not fsio.is_local(path) or not groups:
        return {}
    local = fsio.filesystem(path)[1]
    found = {}
    for name, (dtype, shape) in BLOB_COLUMNS.items():
        if pa.types.is_fixed_size_binary(parquet.schema_arrow.field(name).type):
            raw = read_plain_blobs(local, parquet, name, groups, source=path)
            if raw is not None:
                found[name] = raw.view(np.dtype(dtype)).reshape(len(raw), *shape)
            continue
        try:
            values = read_lists(local, parquet, name, shape, np.dtype(dtype), groups, path)
        except ValueError as err:
            raise FormatError(path, str(err)) from err
        if values is not None:
            found[name] = values
    return found


def count_split_rows(path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows (G,) and rows of ``split`` (G,) in each row group of one pairs file or published
    shard; reads the footer and the ``split`` column only."""
    with fsio.open_parquet(path) as parquet:
        _check_columns(path, parquet, ["split"])
        meta = parquet.metadata
        rows = np.array([meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        try:
            values = parquet.read(columns=["split"]).column("split")
        except fsio.PARQUET_ERRORS as err:
            raise FormatError(path, fsio.parquet_problem(err)) from err
    # (N + 1,) running count of split rows; a row group's count is its end minus its start
    running = np.concatenate([[0], np.cumsum(values.to_numpy(zero_copy_only=False) == split)])
    ends = np.cumsum(rows)
    return rows, running[ends] - running[ends - rows]


def _check_columns(path: str, parquet: pq.ParquetFile, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in parquet.schema_arrow.names]
    if missing:
        raise FormatError(path, f"lacks pairs columns {missing}")


@dataclass(frozen=True, eq=False)
class PairView:
    """The pixels of one galaxy for display."""

    targetid: int
    z: float
    image: np.ndarray  # (3, H, W) float32 nanomaggies, bands g, r, z
    flux: np.ndarray  # (7781,) float32 on WAVELENGTH, 1e-17 erg/s/cm2/Å
    mask: np.ndarray  # (7781,) bool, True = bad pixel


# Maps targetids to their views; raises KeyError naming any targetid it does not hold.
PairLookup = Callable[[Sequence[int]], dict[int, PairView]]


def _views(table: pa.Table) -> dict[int, PairView]:
    images = decode_blob("image", table.column("image"))  # (N, 3, 152, 152)
    fluxes = decode_blob("flux", table.column("flux"))  # (N, 7781)
    masks = decode_blob("mask", table.column("mask")) != 0  # (N, 7781)
    ids = table.column("targetid").to_pylist()
    zs = table.column("z").to_pylist()
    return {
        int(t): PairView(int(t), float(z), images[i], fluxes[i], masks[i])
        for i, (t, z) in enumerate(zip(ids, zs, strict=True))
    }


def pairs_lookup(source: pa.Table | str) -> PairLookup:
    """A :data:`PairLookup` over a pairs table, or a pairs folder/file (local path or fsspec URL).

    A folder is read lazily: each call reads only the rows of the requested targetids. Asking
    for a targetid that is not there raises KeyError naming it.
    """
    if isinstance(source, pa.Table):
        dataset: pads.Dataset = pads.dataset(source)
    else:
        dataset = fsio.parquet_dataset(source)

    def lookup(targetids: Sequence[int]) -> dict[int, PairView]:
        wanted = sorted({int(t) for t in targetids})
        table = fsio.read_dataset(
            dataset,
            columns=PAIR_VIEW_COLUMNS,
            filter=pc.field("targetid").isin(pa.array(wanted, pa.int64())),
        )
        views = _views(table)
        missing = [t for t in wanted if t not in views]
        if missing:
            raise KeyError(
                f"pairs {source if isinstance(source, str) else 'table'} lack targetids {missing}"
            )
        return views

    return lookup
