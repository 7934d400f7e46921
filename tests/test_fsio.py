"""fsio: Parquet page checksums catch a flipped bit; temporaries of dead writers are swept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pairs_fixture import make_pairs_table

from astroclip_core import fsio
from astroclip_core.formats import FormatError
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.pairs import iter_pairs_batches, read_pairs, write_pairs

PIXEL = 1000  # make_pairs_table's default pixel


def _flip_a_page_byte(path: Path) -> None:
    """Flip one bit inside a page of the ``flux`` column, where a plain read sees no error.

    Offsets are tried through the column chunk until one leaves the file readable by a reader
    that does not verify checksums but changes what it reads: a bit flipped in the page data
    itself, not in a page header.
    """
    original = path.read_bytes()
    expected = pq.read_table(path)
    group = pq.ParquetFile(path).metadata.row_group(0)
    (chunk,) = (
        c for c in map(group.column, range(group.num_columns)) if c.path_in_schema == "flux"
    )
    # the chunk starts with its dictionary page when it has one (the blobs live there)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    size = chunk.total_compressed_size
    for offset in range(start + size // 2, start + size, 997):
        damaged = bytearray(original)
        damaged[offset] ^= 0x10
        path.write_bytes(bytes(damaged))
        try:
            silently_wrong = not pq.read_table(path).equals(expected)
        except OSError:
            silently_wrong = False
        if silently_wrong:
            return
    raise AssertionError(f"no offset in the flux chunk of {path} gives a silent misread")


def test_flipped_bit_in_a_pairs_file_is_detected_and_names_the_file(tmp_path: Path) -> None:
    layout = StorageLayout(str(tmp_path))
    written = write_pairs(layout, "edr", PIXEL, make_pairs_table(24, 0))
    before = read_pairs(written.path)
    _flip_a_page_byte(Path(written.path))
    # a reader that does not verify would hand out wrong numbers here (see the helper)
    with pytest.raises(FormatError, match="CRC checksum") as err:
        read_pairs(written.path)
    assert written.path in str(err.value)
    with pytest.raises(FormatError, match="CRC checksum") as err:
        list(iter_pairs_batches(written.path, ["targetid", "flux"], batch_rows=8))
    assert written.path in str(err.value)
    dataset = fsio.parquet_dataset(layout.pairs_dir("edr"))
    with pytest.raises(FormatError, match="CRC checksum") as err:
        fsio.read_dataset(dataset, columns=["targetid", "flux"])
    assert Path(written.path).resolve() == Path(err.value.source).resolve()
    assert before.num_rows == 24


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _temp(folder: Path, target: str, pid: int, host: str | None = None) -> Path:
    host = host if host is not None else fsio.temp_prefix("x").split(".tmp-")[1].rsplit("-", 2)[0]
    path = folder / f".{target}.tmp-{host}-{pid}-abcd1234"
    path.write_bytes(b"partial")
    return path


def test_only_temporaries_of_gone_writers_are_swept(tmp_path: Path) -> None:
    dead, live = _dead_pid(), os.getpid()
    day_ago = time.time() - fsio.STALE_TEMP_AGE_S - 60
    of_dead = _temp(tmp_path, "part-0.parquet", dead)
    dead_dir = tmp_path / f".edr.tmp-{of_dead.name.split('.tmp-')[1]}x"
    dead_dir.mkdir()
    (dead_dir / "data").mkdir()
    (dead_dir / "data" / "train-00000-of-00001.parquet").write_bytes(b"shard")
    of_live = _temp(tmp_path, "model.pt", live)
    reused_pid = _temp(tmp_path, "checkpoint.pt", live)  # same pid, but written before we started
    os.utime(reused_pid, (day_ago, day_ago))
    other_host_new = _temp(tmp_path, "a.fits", 7, host="elsewhere")
    other_host_old = _temp(tmp_path, "b.fits", 7, host="elsewhere")
    os.utime(other_host_old, (day_ago, day_ago))
    legacy_old = tmp_path / ".c.fits.k3j5l7m9.tmp"
    legacy_old.write_bytes(b"partial")
    os.utime(legacy_old, (day_ago, day_ago))
    plain = [tmp_path / ".hidden", tmp_path / "part-0.parquet"]
    for path in plain:
        path.write_bytes(b"keep")

    removed = fsio.remove_stale_temps(tmp_path)

    assert sorted(removed) == sorted([of_dead, dead_dir, reused_pid, other_host_old, legacy_old])
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([of_live.name, other_host_new.name, *(p.name for p in plain)])


_KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from astroclip_core import fsio
folder = fsio.make_temp_dir(Path(sys.argv[1]) / "edr")
(folder / "shard.parquet").write_bytes(b"x" * 4096)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_next_write_removes_what_a_killed_writer_left(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    killed = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(hf)], check=False)
    assert killed.returncode == -signal.SIGKILL
    (leftover,) = hf.iterdir()  # what a kill -9 during publish leaves: hf/.edr.tmp-*
    assert leftover.name.startswith(".edr.tmp-") and (leftover / "shard.parquet").is_file()
    built = fsio.make_temp_dir(hf / "edr")
    assert sorted(hf.iterdir()) == [built]
    fsio.atomic_write_bytes(str(hf / "edr.json"), b"{}")
    assert sorted(p.name for p in hf.iterdir()) == sorted([built.name, "edr.json"])


def test_staged_file_publishes_only_on_commit(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "big.fits"
    target.parent.mkdir()
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="broke off"), fsio.staged_file(str(target)) as staged:
        staged.fh.write(b"half of the new")
        assert staged.path.parent == target.parent and staged.path.name.startswith(".big.fits.tmp-")
        raise RuntimeError("the download broke off")
    assert target.read_bytes() == b"old" and sorted(target.parent.iterdir()) == [target]
    with fsio.staged_file(str(target)) as staged:
        for _ in range(3):
            staged.fh.write(b"chunk ")
        staged.commit()
    assert target.read_bytes() == b"chunk chunk chunk " and target.stat().st_mode & 0o777 == 0o644
    assert sorted(target.parent.iterdir()) == [target]


def test_a_failed_staged_file_leaves_no_empty_folders(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    target = cache / "ls-dr9" / "152" / "cutout.fits"
    with pytest.raises(RuntimeError, match="404"), fsio.staged_file(str(target)):
        raise RuntimeError("HTTP 404")
    assert list(cache.iterdir()) == []  # the two folders made for it are gone, cache/ stays
    with fsio.staged_file(str(target)) as staged:
        staged.fh.write(b"x")
        staged.commit()
    assert target.read_bytes() == b"x"
