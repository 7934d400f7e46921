"""Interim spectra/cutouts after pairs: evicted by version, fetched again when missing, locked."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pyarrow as pa
import pytest

from astroclip_core import fsio
from astroclip_core.ingest.pairs import BLOB_STAGES, REDERIVE_TRIES, _read_blob_input
from astroclip_core.ingest.partitionlock import partition_lock, partition_lock_path
from astroclip_core.ingest.rawcache import RawCachePolicy, evict_interim
from astroclip_core.sources.hostslots import LOCK_DIR_ENV
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.interim import interim_version, remove_interim, write_interim

REPO = Path(__file__).resolve().parents[1]
RELEASE, PIXEL = "edr", 1703


def _table(targetids: list[int]) -> pa.Table:
    return pa.table({"targetid": pa.array(targetids, pa.int64())})


@pytest.fixture
def layout(tmp_path: Path) -> StorageLayout:
    return StorageLayout(str(tmp_path / "root"))


@pytest.fixture
def memory_layout():
    layout = StorageLayout("memory://interim-eviction-test/run")
    yield layout
    fsspec.filesystem("memory").rm("/interim-eviction-test", recursive=True)


@pytest.mark.parametrize("root", ["layout", "memory_layout"])
def test_evict_removes_only_the_versions_read(root: str, request) -> None:
    layout = request.getfixturevalue(root)
    for stage in (*BLOB_STAGES, "matches"):
        write_interim(layout, stage, RELEASE, PIXEL, _table([1, 2]))
    read = {stage: interim_version(layout, stage, RELEASE, PIXEL) for stage in BLOB_STAGES}
    assert None not in read.values()
    # A concurrent run of the cutouts step rewrites its table after the pairs step read it.
    write_interim(layout, "cutouts", RELEASE, PIXEL, _table([1, 2, 3]))
    assert interim_version(layout, "cutouts", RELEASE, PIXEL) != read["cutouts"]
    policy = RawCachePolicy.parse("evict")
    outcome = evict_interim(layout, policy, RELEASE, PIXEL, read, pairs_ok=True)
    assert outcome.tables_removed == ("spectra",)
    assert outcome.bytes_removed > 0
    assert "cutouts" in outcome.note
    assert not fsio.exists(layout.interim_file(RELEASE, PIXEL, "spectra"))
    # The newer cutouts and the matches (never evicted) are still there.
    assert fsio.read_parquet(layout.interim_file(RELEASE, PIXEL, "cutouts")).num_rows == 3
    assert fsio.exists(layout.interim_file(RELEASE, PIXEL, "matches"))
    # Gone or changed: nothing to remove, no error.
    assert remove_interim(layout, "spectra", RELEASE, PIXEL, read["spectra"]) == 0


@pytest.mark.parametrize(
    ("policy", "pairs_ok", "removed"),
    [
        ("keep", True, ()),
        ("evict", False, ()),
        ("evict", True, BLOB_STAGES),
        ("1gb", True, BLOB_STAGES),
    ],
)
def test_which_policies_evict_interim(
    layout: StorageLayout, policy: str, pairs_ok: bool, removed: tuple[str, ...]
) -> None:
    for stage in BLOB_STAGES:
        write_interim(layout, stage, RELEASE, PIXEL, _table([1]))
    read = {stage: interim_version(layout, stage, RELEASE, PIXEL) for stage in BLOB_STAGES}
    outcome = evict_interim(layout, RawCachePolicy.parse(policy), RELEASE, PIXEL, read, pairs_ok)
    assert set(outcome.tables_removed) == set(removed)
    left = {s for s in BLOB_STAGES if fsio.exists(layout.interim_file(RELEASE, PIXEL, s))}
    assert left == set(BLOB_STAGES) - set(removed)
    assert outcome.metadata()["interim_removed"] == (", ".join(outcome.tables_removed) or "none")


def test_a_missing_input_is_made_again(layout: StorageLayout) -> None:
    calls: list[str] = []

    def again() -> None:
        calls.append("spectra")
        write_interim(layout, "spectra", RELEASE, PIXEL, _table([7, 8]))

    table, version, rederived = _read_blob_input(
        layout, "spectra", RELEASE, PIXEL, {"spectra": again}
    )
    assert calls == ["spectra"] and rederived
    assert table.column("targetid").to_pylist() == [7, 8]
    assert version == interim_version(layout, "spectra", RELEASE, PIXEL)
    # Present: read as it is, nothing run.
    _, _, rederived = _read_blob_input(layout, "spectra", RELEASE, PIXEL, {"spectra": again})
    assert calls == ["spectra"] and not rederived


def test_a_missing_input_without_a_way_to_make_it_says_what_to_run(layout: StorageLayout) -> None:
    with pytest.raises(FileNotFoundError, match="evicted after an earlier pairs run.*'cutouts'"):
        _read_blob_input(layout, "cutouts", RELEASE, PIXEL, {})


def test_an_input_that_never_stays_fails_after_the_tries(layout: StorageLayout) -> None:
    calls = []

    def vanishing() -> None:  # made, then evicted at once by "another run", every time
        calls.append(1)

    with pytest.raises(FileNotFoundError, match=f"vanished {REDERIVE_TRIES} times"):
        _read_blob_input(layout, "cutouts", RELEASE, PIXEL, {"cutouts": vanishing})
    assert len(calls) == REDERIVE_TRIES


_HOLDER = """
import sys, time
from pathlib import Path
from astroclip_core.ingest.partitionlock import partition_lock
from astroclip_core.storage import StorageLayout
with partition_lock(StorageLayout(sys.argv[1]), "edr", 1703):
    Path(sys.argv[2]).write_text("held")
    while not Path(sys.argv[3]).exists():
        time.sleep(0.01)
"""


def test_the_partition_lock_excludes_other_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))
    layout = StorageLayout(str(tmp_path / "root"))
    held, release = tmp_path / "held", tmp_path / "release"
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, layout.root, str(held), str(release)],
        cwd=REPO,
        env={**os.environ, LOCK_DIR_ENV: str(tmp_path / "locks")},
    )
    try:
        while not held.exists():
            assert child.poll() is None, "the lock holder died"
            time.sleep(0.01)
        path = partition_lock_path(layout, RELEASE, PIXEL)
        assert not _can_lock(path)
        # Another partition, or the same one of another data root, is not held.
        assert _can_lock(partition_lock_path(layout, RELEASE, PIXEL + 1))
        assert _can_lock(partition_lock_path(StorageLayout(str(tmp_path / "b")), RELEASE, PIXEL))
        release.write_text("go")
        assert child.wait(timeout=60) == 0
        assert _can_lock(path)  # the holder has gone
        with partition_lock(layout, RELEASE, PIXEL) as got:
            assert got == path
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def _can_lock(path: Path) -> bool:
    """Whether an exclusive flock on ``path`` is free now (taken and dropped at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops a lock it took
    return True
