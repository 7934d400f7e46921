"""Fixed-shape list columns read from their Parquet pages, every page CRC verified.

The published dataset stores ``image`` as ``list<list<list<float32>>>`` (3, 152, 152) and
``flux``/``ivar`` as lists of 7781 float32. Parquet keeps such a column as one value per pixel
plus a repetition and a definition level per pixel; Arrow decodes every level into offsets and
validity bitmaps, which costs more than the values. :func:`read_lists` checks the levels
instead of materialising them: every definition level must say "value present" and every
repetition level must be the one a row of ``shape`` has at that position, so each row holds
exactly ``shape`` values, none null (what :func:`astroclip_core.tables.schemas.
decode_array_column` checks on Arrow's offsets). Level runs are checked a run at a time, in
compiled code (numba), so that a run of 151 pixels costs one comparison.

Pages may be zstd-compressed and PLAIN or BYTE_STREAM_SPLIT encoded (what the published shards
use; ``mask``'s uint8 values are PLAIN INT32); anything else (other codecs, dictionaries,
pages this module does not know) makes it return None, and the caller reads the column with
Arrow. A page whose bytes do not match its CRC-32 raises FormatError naming the file, as in
:mod:`astroclip_core.tables.parquet_pages`.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from isal.isal_zlib import crc32  # the CRC-32 of zlib, computed with carry-less multiplies

from astroclip_core.formats import FormatError
from astroclip_core.tables.parquet_pages import read_page_header

_DATA_PAGE = 0  # parquet-format PageType (v2 pages are left to Arrow)
_PLAIN, _BYTE_STREAM_SPLIT = 0, 9  # parquet-format Encoding
_CODECS = {"UNCOMPRESSED": None, "ZSTD": "zstd"}


@cache
def _kernels():
    # numba compiles these on first use (and caches them on disk); imported here so that
    # readers of the pairs table never load it
    from numba import njit

    @njit(cache=True, nogil=True)
    def check_levels(data, n, bit_width, first, strides, max_def, is_rep):  # pragma: no cover
        # data: RLE/bit-packed hybrid levels (uint8); n levels from value ``first`` of the row
        # group on; strides (K,): values per row, per axis-0 list, ...; True when every level
        # is the one a row of that shape has there (is_rep), or is max_def (not is_rep)
        k = len(strides)
        pos, i = 0, 0
        byte_width = (bit_width + 7) // 8
        while i < n:
            header, shift = 0, 0
            while True:
                if pos >= len(data):
                    return False
                b = data[pos]
                pos += 1
                header |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
            if header & 1:  # bit-packed: groups of 8 values of bit_width bits
                count = (header >> 1) * 8
                if pos + (header >> 1) * bit_width > len(data):
                    return False
                for j in range(min(count, n - i)):
                    bit = j * bit_width
                    word = 0
                    for t in range((bit % 8 + bit_width + 7) // 8):
                        word |= data[pos + bit // 8 + t] << (8 * t)
                    level = (word >> (bit % 8)) & ((1 << bit_width) - 1)
                    v = first + i + j
                    if is_rep:
                        want = k
                        for r in range(k):
                            if v % strides[r] == 0:
                                want = r
                                break
                        if level != want:
                            return False
                    elif level != max_def:
                        return False
                pos += (header >> 1) * bit_width
                i += count
            else:  # run: ``count`` copies of one value
                count = header >> 1
                if count == 0 or pos + byte_width > len(data):
                    return False
                level = 0
                for t in range(byte_width):
                    level |= data[pos + t] << (8 * t)
                pos += byte_width
                count = min(count, n - i)
                v = first + i
                if not is_rep:
                    if level != max_def:
                        return False
                elif level == k:  # inside the innermost list: no list may start in the run
                    inner = strides[k - 1]
                    if v % inner == 0 or v % inner + count > inner:
                        return False
                else:
                    for j in range(count):
                        want = k
                        for r in range(k):
                            if (v + j) % strides[r] == 0:
                                want = r
                                break
                        if level != want:
                            return False
                i += count
        return True

    @njit(cache=True, nogil=True)
    def unsplit(data, out):  # pragma: no cover
        # BYTE_STREAM_SPLIT float32: data (4 * N,) byte planes -> out (4 * N,) value bytes
        n = len(out) // 4
        for i in range(n):
            for b in range(4):
                out[4 * i + b] = data[b * n + i]

    return check_levels, unsplit


# numpy dtype -> the Parquet physical type that stores it (uint8 as INT32, as Arrow writes it)
_PHYSICAL = {np.dtype(np.float32): "FLOAT", np.dtype(np.uint8): "INT32"}


def _leaf(parquet: pq.ParquetFile, name: str, depth: int, dtype: np.dtype) -> int | None:
    found = [
        i for i in range(len(parquet.schema)) if parquet.schema.column(i).path.split(".")[0] == name
    ]
    if len(found) != 1:
        return None
    leaf = parquet.schema.column(found[0])
    ok = leaf.physical_type == _PHYSICAL.get(dtype) and leaf.max_repetition_level == depth
    return found[0] if ok else None


def read_lists(
    path: str,
    parquet: pq.ParquetFile,
    name: str,
    shape: tuple[int, ...],
    dtype: np.dtype,
    row_groups: Sequence[int],
    source: str = "",
) -> np.ndarray | None:
    """(N, *shape) values (float32 or uint8 ``dtype``) of the nested-list column ``name`` in
    ``row_groups`` of the local Parquet file ``path`` (opened as ``parquet``), or None when its
    pages are stored in a way this module does not read (read the column with Arrow then).

    Raises FormatError naming ``source`` (default ``path``) for a page that fails its CRC-32,
    and ValueError naming the column when a row does not hold exactly ``shape`` values or a
    uint8 value is out of range.
    """
    dtype = np.dtype(dtype)
    column = _leaf(parquet, name, len(shape), dtype)
    if column is None:
        return None
    meta = parquet.metadata
    n_rows = [meta.row_group(g).num_rows for g in row_groups]
    per_row = int(np.prod(shape))
    # (N * prod(shape),) in Arrow's memory pool, which reuses the pages of freed reads: a fresh
    # numpy array would fault in every page on the first write
    size = sum(n_rows) * per_row
    out = np.frombuffer(pa.allocate_buffer(dtype.itemsize * size), dtype, size)
    with open(path, "rb") as fh:
        # unmapped when the last page view is dropped, at the latest when this returns
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    start = 0
    for g, rows in zip(row_groups, n_rows, strict=True):
        chunk = out[start : start + rows * per_row]
        if not _read_chunk(source or path, memoryview(mapped), parquet, column, g, shape, chunk):
            return None
        start += rows * per_row
    return out.reshape(-1, *shape)


def _read_chunk(
    path: str,
    view: memoryview,
    parquet: pq.ParquetFile,
    column: int,
    group: int,
    shape: tuple[int, ...],
    out: np.ndarray,
) -> bool:
    # fill ``out`` (rows * prod(shape),) with the values of one column chunk; False = not ours
    meta = parquet.metadata.row_group(group).column(column)
    leaf = parquet.schema.column(column)
    if meta.compression not in _CODECS or meta.has_dictionary_page:
        return False
    codec = _CODECS[meta.compression]
    check_levels, unsplit = _kernels()
    per_row = int(np.prod(shape))
    strides = np.array([int(np.prod(shape[r:])) for r in range(len(shape))], np.int64)
    rep_width = int(leaf.max_repetition_level).bit_length()
    def_width = int(leaf.max_definition_level).bit_length()
    pos, end = meta.data_page_offset, meta.data_page_offset + meta.total_compressed_size
    done = 0  # values written so far
    while pos < end:
        try:
            header = read_page_header(view, pos)
        except ValueError as err:
            raise FormatError(path, f"column {meta.path_in_schema}: {err}") from None
        body_at = pos + header.header_bytes
        body = view[body_at : body_at + header.compressed_bytes]
        if header.crc is not None and crc32(body) != header.crc:
            raise FormatError(
                path,
                f"CRC checksum mismatch in the page at byte {pos} (column "
                f"{meta.path_in_schema!r}, row group {group})",
            )
        if header.page_type != _DATA_PAGE or header.encoding not in (
            _PLAIN,
            _BYTE_STREAM_SPLIT,
        ):
            return False
        page = (
            np.frombuffer(body, np.uint8)
            if codec is None
            else np.frombuffer(
                pa.decompress(body, header.uncompressed_bytes, codec, asbytes=False),
                np.uint8,
            )
        )
        n = header.num_values
        at = 0
        levels = []
        for width in (rep_width, def_width):
            size = int.from_bytes(page[at : at + 4].tobytes(), "little") if width else 0
            levels.append(page[at + 4 : at + 4 + size] if width else page[:0])
            at += 4 + size if width else 0
        values = page[at:]
        if len(values) != 4 * n or done + n > len(out):
            return False  # nulls or empty lists (fewer values than levels), or too many
        ok = check_levels(levels[0], n, rep_width, done, strides, 0, True) and check_levels(
            levels[1], n, def_width, 0, strides, leaf.max_definition_level, False
        )
        if not ok:
            raise ValueError(f"column {meta.path_in_schema!r}: rows are not lists of shape {shape}")
        if out.dtype == np.uint8:  # stored as INT32
            if header.encoding != _PLAIN:
                return False
            ints = values.view("<i4")
            if n and (ints.min() < 0 or ints.max() > 255):
                raise ValueError(f"column {meta.path_in_schema!r} has values outside uint8")
            out[done : done + n] = ints
        elif header.encoding == _BYTE_STREAM_SPLIT:
            unsplit(values, out[done : done + n].view(np.uint8))
        else:
            out[done : done + n].view(np.uint8)[:] = values
        done += n
        pos = body_at + header.compressed_bytes
    return done == len(out) and done % per_row == 0
