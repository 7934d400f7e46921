"""Fixed-size binary columns read straight from their Parquet pages, every page CRC verified.

The pairs table stores its float blobs (``image``, ``flux``, ``ivar``) uncompressed, PLAIN
encoded and required: a data page's body is then the rows' bytes back to back, nothing else.
Arrow's reader copies that body out of the file, and verifies the page checksum with a
table-driven CRC-32 that reads a few bytes per cycle. :func:`read_plain_blobs` instead walks
the column chunk's page headers in the memory-mapped file, checks each page's CRC-32 (the same
checksum, computed by ISA-L's carry-less-multiply code through ``isal``) and returns the rows
as a numpy view of the mapping: no copy, the same guarantee (a page whose bytes do not match
its checksum raises FormatError naming the file). ``bench/bench_loader.py`` times both.

It reads only what it fully understands: a column chunk that is compressed, dictionary or
non-PLAIN encoded, nullable, repeated, or whose pages carry anything but values makes it
return None, and the caller reads that column with Arrow. Like Arrow, a page written without
a checksum is read unverified (the project's writers always write one,
:func:`astroclip_core.fsio.atomic_write_parquet`).

Page headers are Thrift compact-protocol structs (parquet-format ``PageHeader``); this module
decodes the few fields it needs and skips the rest.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
from isal.isal_zlib import crc32  # the CRC-32 of zlib, computed with carry-less multiplies

from astroclip_core.formats import FormatError

_DATA_PAGE, _DATA_PAGE_V2 = 0, 3  # parquet-format PageType
_PLAIN = 0  # parquet-format Encoding


@dataclass(frozen=True)
class PageHeader:
    """The fields of one Parquet page header that a PLAIN values read needs."""

    page_type: int
    uncompressed_bytes: int  # the body once decompressed
    compressed_bytes: int  # the body after the header
    crc: int | None  # CRC-32 of the body, None when the writer wrote none
    num_values: int
    encoding: int
    level_bytes: int  # v2 pages: repetition + definition level bytes at the body's start
    header_bytes: int


class _Compact:
    """A cursor over Thrift compact-protocol bytes."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        data, pos = self.data, self.pos
        shift = result = 0
        while True:
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                self.pos = pos
                return result
            shift += 7
            if shift > 63:
                raise ValueError("varint longer than 64 bits")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def struct(self, wanted: frozenset[int] = frozenset()) -> dict[int, object]:
        """The integer fields of a struct (and its ``wanted`` struct fields, as dicts)."""
        fields: dict[int, object] = {}
        field_id = 0
        while True:
            head = self.byte()
            kind = head & 0x0F
            if kind == 0:  # STOP
                return fields
            delta = head >> 4
            field_id = field_id + delta if delta else self.zigzag()
            if kind in (4, 5, 6):  # i16, i32, i64
                fields[field_id] = self.zigzag()
            elif kind in (1, 2):  # bool true/false, the value is in the type
                fields[field_id] = kind == 1
            elif kind == 12 and field_id in wanted:
                fields[field_id] = self.struct()
            else:
                self.skip(kind)

    def skip(self, kind: int) -> None:
        if kind in (1, 2):
            return
        if kind == 3:  # byte
            self.pos += 1
        elif kind in (4, 5, 6):
            self.varint()
        elif kind == 7:  # double
            self.pos += 8
        elif kind == 8:  # binary: varint length, bytes
            self.pos += self.varint()
        elif kind in (9, 10):  # list/set: size in the high nibble (15 = varint follows)
            head = self.byte()
            size = head >> 4 if head >> 4 != 15 else self.varint()
            for _ in range(size):
                if head & 0x0F in (1, 2):  # a bool in a list takes one byte
                    self.pos += 1
                else:
                    self.skip(head & 0x0F)
        elif kind == 11:  # map: varint size, then key/value types
            size = self.varint()
            if size:
                types = self.byte()
                for _ in range(size):
                    self.skip(types >> 4)
                    self.skip(types & 0x0F)
        elif kind == 12:
            self.struct()
        else:
            raise ValueError(f"unknown Thrift compact type {kind}")


def read_page_header(data: memoryview, pos: int) -> PageHeader:
    """The page header that starts at byte ``pos`` of ``data``; ValueError when malformed."""
    window = 256  # bytes copied to parse from; headers are short unless they hold statistics
    while True:
        cursor = _Compact(bytes(data[pos : pos + window]), 0)
        try:
            fields = cursor.struct(wanted=frozenset({5, 8}))
            break
        except IndexError:
            if pos + window >= len(data):
                raise ValueError(
                    f"page header at byte {pos} runs past the end of the data"
                ) from None
            window *= 16
    cursor.pos += pos
    v1 = fields.get(5)
    v2 = fields.get(8)
    page = v1 if isinstance(v1, dict) else v2 if isinstance(v2, dict) else {}
    crc = fields.get(4)
    return PageHeader(
        page_type=int(fields.get(1, -1)),  # type: ignore[arg-type]
        uncompressed_bytes=int(fields.get(2, -1)),  # type: ignore[arg-type]
        compressed_bytes=int(fields.get(3, -1)),  # type: ignore[arg-type]
        crc=None if crc is None else int(crc) & 0xFFFFFFFF,  # type: ignore[arg-type]
        num_values=int(page.get(1, -1)),
        encoding=int(page.get(4 if isinstance(v2, dict) else 2, -1)),
        level_bytes=int(page.get(5, 0)) + int(page.get(6, 0)) if isinstance(v2, dict) else 0,
        header_bytes=cursor.pos - pos,
    )


def _plain_chunk(parquet: pq.ParquetFile, column: int, row_group: int) -> bool:
    """True when the chunk holds required, unrepeated FLBA values, uncompressed, PLAIN only."""
    meta = parquet.metadata.row_group(row_group).column(column)
    leaf = parquet.schema.column(column)
    return (
        meta.physical_type == "FIXED_LEN_BYTE_ARRAY"
        and meta.compression == "UNCOMPRESSED"
        and not meta.has_dictionary_page
        and leaf.max_definition_level == 0
        and leaf.max_repetition_level == 0
    )


def _chunk_values(
    path: str, data: memoryview, parquet: pq.ParquetFile, column: int, row_group: int
) -> list[tuple[int, int]] | None:
    """(offset, rows) of each page's values in the chunk; None when a page is not plain values.

    Raises FormatError naming ``path`` for a page whose body fails its CRC-32.
    """
    meta = parquet.metadata.row_group(row_group).column(column)
    width = parquet.schema.column(column).length  # bytes per value
    pos, end = meta.data_page_offset, meta.data_page_offset + meta.total_compressed_size
    pages: list[tuple[int, int]] = []
    rows = 0
    while pos < end:
        try:
            header = read_page_header(data, pos)
        except ValueError as err:
            raise FormatError(path, f"column {meta.path_in_schema}: {err}") from None
        body = pos + header.header_bytes
        if (
            header.page_type not in (_DATA_PAGE, _DATA_PAGE_V2)
            or header.encoding != _PLAIN
            or header.level_bytes
            or header.compressed_bytes != header.num_values * width
            or body + header.compressed_bytes > end
        ):
            return None
        if header.crc is not None and crc32(data[body : body + header.compressed_bytes]) != (
            header.crc
        ):
            raise FormatError(
                path,
                f"CRC checksum mismatch in the page at byte {pos} (column "
                f"{meta.path_in_schema!r}, row group {row_group})",
            )
        pages.append((body, header.num_values))
        rows += header.num_values
        pos = body + header.compressed_bytes
    if rows != parquet.metadata.row_group(row_group).num_rows:
        return None
    return pages


def read_plain_blobs(
    path: str, parquet: pq.ParquetFile, name: str, row_groups: Sequence[int], source: str = ""
) -> np.ndarray | None:
    """(N, width) uint8 rows of the top-level fixed-size binary column ``name`` in
    ``row_groups`` of the local Parquet file ``path`` (opened as ``parquet``), every page
    CRC-verified, or None when a chunk is not plain uncompressed values (read it with Arrow).

    A view of a read-only memory mapping of the file when the rows lie in one page; the mapping
    lives as long as the array. A copy (one concatenation) when they span several pages.
    FormatError names ``source`` (default ``path``) for a checksum mismatch or a bad header.
    """
    leaves = [i for i in range(len(parquet.schema)) if parquet.schema.column(i).path == name]
    if len(leaves) != 1 or not all(_plain_chunk(parquet, leaves[0], g) for g in row_groups):
        return None
    column = leaves[0]
    with open(path, "rb") as fh:
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    data = memoryview(mapped)
    width = parquet.schema.column(column).length
    parts = []
    for g in row_groups:
        pages = _chunk_values(source or path, data, parquet, column, g)
        if pages is None:
            return None
        parts += [
            np.frombuffer(mapped, np.uint8, rows * width, offset).reshape(rows, width)
            for offset, rows in pages
        ]
    data.release()
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.empty((0, width), np.uint8)
