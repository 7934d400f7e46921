"""tables.parquet_pages: blobs read from their pages match Arrow's read, and a flipped bit in
a page is an error naming the file; what it does not handle is left to Arrow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pairs_fixture import make_pairs_table

from astroclip_core.formats import FormatError
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.pairs import (
    conform_pairs,
    decode_pairs,
    read_pairs_split,
    write_pairs,
)
from astroclip_core.tables.parquet_pages import read_plain_blobs
from astroclip_core.tables.schemas import BLOB_COLUMNS
from astroclip_core.training.data import PairsLoader, build_index

PIXEL = 1000  # make_pairs_table's default pixel


def _same_arrays(a, b) -> None:
    for c in ("targetid", "z", "image", "flux", "ivar", "mask"):
        np.testing.assert_array_equal(getattr(a, c), getattr(b, c), err_msg=c)


def _chunk(path: Path | str, column: str, group: int = 0):
    meta = pq.ParquetFile(path).metadata.row_group(group)
    (chunk,) = (c for c in map(meta.column, range(meta.num_columns)) if c.path_in_schema == column)
    return chunk


def test_pairs_blobs_come_from_the_pages_and_equal_arrows_read(tmp_path: Path) -> None:
    table = make_pairs_table(30, seed=3)
    path = write_pairs(StorageLayout(str(tmp_path)), "edr", PIXEL, table).path
    expected = decode_pairs(pq.read_table(path))
    with pq.ParquetFile(path) as parquet:
        for name in ("image", "flux", "ivar"):
            raw = read_plain_blobs(path, parquet, name, [0])
            assert raw is not None and raw.shape == (30, np.prod(BLOB_COLUMNS[name][1]) * 4)
            assert isinstance(raw.base, memoryview) or raw.base is not None  # a view, no copy
        assert read_plain_blobs(path, parquet, "mask", [0]) is None  # zstd: Arrow reads it
    arrays, rows = read_pairs_split(path, None, [0])
    _same_arrays(arrays, expected)
    assert not arrays.image.flags.owndata and not arrays.image.flags.writeable
    np.testing.assert_array_equal(rows, np.arange(30))


def test_several_pages_and_row_groups_are_concatenated(tmp_path: Path) -> None:
    # 4-row pages, 8-row row groups: every blob chunk has two pages
    table = conform_pairs(make_pairs_table(20, seed=5))
    path = tmp_path / "paged.parquet"
    pq.write_table(
        table,
        path,
        row_group_size=8,
        write_batch_size=4,
        data_page_size=1,
        compression="none",
        use_dictionary=False,
        write_page_checksum=True,
    )
    with pq.ParquetFile(path) as parquet:
        assert read_plain_blobs(str(path), parquet, "image", [0, 1, 2]) is not None
    expected = decode_pairs(pq.read_table(path))
    arrays, _ = read_pairs_split(str(path), None)
    _same_arrays(arrays, expected)
    arrays, _ = read_pairs_split(str(path), None, [2, 0])
    _same_arrays(arrays, expected.take(np.r_[16:20, 0:8]))


def test_other_encodings_read_as_before(tmp_path: Path) -> None:
    table = conform_pairs(make_pairs_table(12, seed=6))
    expected = decode_pairs(table)
    plain = {"compression": "none", "use_dictionary": False}
    for name, (options, from_pages) in {
        "zstd": ({"compression": "zstd", "use_dictionary": False}, False),
        "dictionary": ({"compression": "none", "use_dictionary": True}, False),
        "nullable": ({**plain, "schema": _nullable(table.schema)}, False),
        "no_crc": ({**plain, "write_page_checksum": False}, True),
        "v2_pages": ({**plain, "data_page_version": "2.0", "write_page_checksum": True}, True),
    }.items():
        path = tmp_path / f"{name}.parquet"
        options = dict(options)
        pq.write_table(table.cast(options.pop("schema", table.schema)), path, **options)
        with pq.ParquetFile(path) as parquet:
            raw = read_plain_blobs(str(path), parquet, "flux", [0])
        assert (raw is not None) == from_pages, name
        arrays, _ = read_pairs_split(str(path), None)
        _same_arrays(arrays, expected)


def _nullable(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.with_nullable(True) for f in schema], metadata=schema.metadata)


def test_flipped_bit_in_a_blob_page_names_the_file(tmp_path: Path) -> None:
    path = write_pairs(StorageLayout(str(tmp_path)), "edr", PIXEL, make_pairs_table(16, 1)).path
    chunk = _chunk(path, "flux")
    before = pq.read_table(path, columns=["flux"])
    data = bytearray(Path(path).read_bytes())
    # the middle of the chunk lies in its one page's values, past the header
    data[chunk.data_page_offset + chunk.total_compressed_size // 2] ^= 0x10
    Path(path).write_bytes(bytes(data))
    # without checksums the damage would pass unnoticed: the values just differ
    unverified = pq.ParquetFile(path, page_checksum_verification=False).read(columns=["flux"])
    assert not unverified.equals(before)
    with pytest.raises(FormatError, match="CRC checksum") as err:
        read_pairs_split(path, "train", [0])
    assert path in str(err.value) and "flux" in str(err.value)
    with pytest.raises(FormatError, match="CRC checksum"):
        list(PairsLoader(build_index([path], split="train"), 2, seed=0).iter_epoch(0))


def test_the_loader_names_the_file_of_a_non_finite_row(tmp_path: Path) -> None:
    layout = StorageLayout(str(tmp_path))
    good = write_pairs(layout, "edr", PIXEL, make_pairs_table(16, seed=1)).path
    table = make_pairs_table(16, seed=2, pixel=PIXEL + 1)
    image = decode_pairs(table).image.copy()
    row = int(np.flatnonzero(table.column("split").to_numpy(zero_copy_only=False) == "train")[0])
    image[row, 1, 70, 70] = np.inf
    blob = pa.FixedSizeBinaryArray.from_buffers(
        table.schema.field("image").type, 16, [None, pa.py_buffer(image.tobytes())]
    )
    table = table.set_column(table.schema.get_field_index("image"), "image", blob)
    bad = write_pairs(layout, "edr", PIXEL + 1, table).path
    loader = PairsLoader(build_index([good, bad]), 4, seed=0, cache_max_bytes=0)
    with pytest.raises(FormatError, match="'image' has 1 non-finite") as err:
        list(loader.iter_epoch(0))
    assert err.value.source == bad
