"""tables.parquet_lists: the published shards' list columns read from their pages equal
Arrow's read; ragged rows, nulls and flipped bits are errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pairs_fixture import make_pairs_table

from astroclip_core.formats import FormatError
from astroclip_core.publish import dataset
from astroclip_core.publish.features import to_hf_table
from astroclip_core.tables.pairs import decode_pairs, read_pairs_split
from astroclip_core.tables.parquet_lists import read_lists
from astroclip_core.tables.schemas import BLOB_COLUMNS, IMAGE_SHAPE


def _shard(path: Path, table: pa.Table) -> str:
    """Write ``table`` as a published shard is written, in row groups of 4 rows."""
    options = {"row_group_size": 4, **dataset._PARQUET_OPTIONS}
    pq.write_table(table, path, write_page_checksum=True, **options)
    return str(path)


def _same_arrays(a, b) -> None:
    for c in ("targetid", "z", "image", "flux", "ivar", "mask"):
        np.testing.assert_array_equal(getattr(a, c), getattr(b, c), err_msg=c)


@pytest.mark.parametrize("plain", [False, True], ids=["published", "uncompressed PLAIN"])
def test_shard_lists_from_pages_equal_arrows_read(tmp_path: Path, plain: bool) -> None:
    pairs = make_pairs_table(10, seed=2)
    options = dict(dataset._PARQUET_OPTIONS)  # zstd, byte-stream split floats
    if plain:
        del options["column_encoding"]
        options.update(compression="none", use_content_defined_chunking=False)
    path = str(tmp_path / "shard.parquet")
    pq.write_table(to_hf_table(pairs), path, row_group_size=4, write_page_checksum=True, **options)
    with pq.ParquetFile(path) as parquet:
        for name, (dtype, shape) in BLOB_COLUMNS.items():
            values = read_lists(path, parquet, name, shape, np.dtype(dtype), [1, 2])
            assert values is not None, name
    expected = decode_pairs(pairs)
    arrays, rows = read_pairs_split(path, None)
    _same_arrays(arrays, expected)
    arrays, _ = read_pairs_split(path, None, [2, 0])
    _same_arrays(arrays, expected.take(np.r_[8:10, 0:4]))


def _ragged_image(n: int, short_row: int) -> pa.Array:
    # list<list<list<float32>>> of shape (3, 152, 152) per row, except that in ``short_row``
    # the first inner list has 151 values and the second 153 (the same total)
    h, w = IMAGE_SHAPE[1:]
    lengths = np.full(n * 3 * h, w, np.int32)
    lengths[short_row * 3 * h] -= 1
    lengths[short_row * 3 * h + 1] += 1
    values = pa.array(np.arange(n * int(np.prod(IMAGE_SHAPE)), dtype=np.float32))
    inner = pa.ListArray.from_arrays(np.r_[0, np.cumsum(lengths)].astype(np.int32), values)
    middle = pa.ListArray.from_arrays(np.arange(n * 3 + 1, dtype=np.int32) * h, inner)
    return pa.ListArray.from_arrays(np.arange(n + 1, dtype=np.int32) * 3, middle)


def test_a_ragged_row_is_an_error_naming_the_file(tmp_path: Path) -> None:
    table = to_hf_table(make_pairs_table(6, seed=3))
    index = table.schema.get_field_index("image")
    ragged = table.set_column(index, "image", _ragged_image(6, short_row=5))
    path = _shard(tmp_path / "ragged.parquet", ragged)
    with pytest.raises(FormatError, match="shape") as err:
        read_pairs_split(path, None, [1])  # rows 4 and 5
    assert path in str(err.value)
    read_pairs_split(path, None, [0])  # rows 0-3 are whole


def test_nulls_fall_back_to_arrow_which_refuses_them(tmp_path: Path) -> None:
    table = to_hf_table(make_pairs_table(4, seed=4))
    flux = table.column("flux").combine_chunks()
    values = flux.values.to_numpy().copy()
    mask = np.zeros(len(values), bool)
    mask[10] = True
    with_null = pa.FixedSizeListArray.from_arrays(pa.array(values, mask=mask), 7781)
    path = _shard(
        tmp_path / "nulls.parquet",
        table.set_column(table.schema.get_field_index("flux"), "flux", with_null),
    )
    with pq.ParquetFile(path) as parquet:
        assert read_lists(path, parquet, "flux", (7781,), np.dtype(np.float32), [0]) is None
    with pytest.raises(FormatError, match="flux") as err:
        read_pairs_split(path, None)
    assert path in str(err.value)


def test_flipped_bit_in_a_list_page_names_the_file(tmp_path: Path) -> None:
    path = _shard(tmp_path / "shard.parquet", to_hf_table(make_pairs_table(4, seed=5)))
    meta = pq.ParquetFile(path).metadata.row_group(0)
    (chunk,) = (
        c
        for c in map(meta.column, range(meta.num_columns))
        if c.path_in_schema.startswith("image.")
    )
    data = bytearray(Path(path).read_bytes())
    data[chunk.data_page_offset + chunk.total_compressed_size // 2] ^= 0x10
    Path(path).write_bytes(bytes(data))
    with pytest.raises(FormatError, match="CRC checksum") as err:
        read_pairs_split(path, "train")
    assert path in str(err.value)
