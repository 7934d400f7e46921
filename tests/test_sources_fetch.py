"""fetch_file's contract: cache hits, validation, one refetch of corrupt files, atomic writes."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pytest
from test_sources_support import RecordingSleep, check_small_fits, write_tree

from astroclip_core.sources.faults import FaultConfig, FaultServer, static_backend
from astroclip_core.sources.fetch import (
    FAILURES_SCHEMA,
    FailureRecord,
    FetchJob,
    failures_table,
    fetch_all,
    fetch_file,
)
from astroclip_core.sources.http import FetchError, RetryClock, RetryPolicy

POLICY = RetryPolicy(max_attempts=3, backoff_base_s=0.0, read_timeout_s=2.0)
CLEAN = FaultConfig(fraction=0.0)
RELPATHS = [
    f"edr/spectro/redux/fuji/healpix/sv3/dark/{p // 100}/{p}/coadd-sv3-dark-{p}.fits"
    for p in (7, 263, 26065)
]


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_cache_hit_does_not_refetch(tmp_path: Path) -> None:
    written = write_tree(tmp_path / "remote", RELPATHS[:1])
    dest = str(tmp_path / "cache" / "a.fits")
    with FaultServer(static_backend(tmp_path / "remote"), CLEAN) as server:
        url = server.url + RELPATHS[0]
        first = fetch_file(url, dest, check_small_fits, POLICY)
        second = fetch_file(url, dest, check_small_fits, POLICY, keep_data=True)
        assert server.requests_for("/" + RELPATHS[0]) == 1
    assert first.ok and not first.from_cache and first.attempts == 1
    assert second.ok and second.from_cache and second.attempts == 0
    assert second.data == written[RELPATHS[0]] and second.n_bytes == len(second.data)
    assert Path(dest).read_bytes() == written[RELPATHS[0]]


def test_damaged_cached_file_is_deleted_and_fetched_again(tmp_path: Path) -> None:
    written = write_tree(tmp_path / "remote", RELPATHS[:1])
    dest = tmp_path / "cache" / "a.fits"
    good = written[RELPATHS[0]]
    with FaultServer(static_backend(tmp_path / "remote"), CLEAN) as server:
        url = server.url + RELPATHS[0]
        assert fetch_file(url, str(dest), check_small_fits, POLICY).ok
        dest.write_bytes(good[: len(good) // 2])  # damaged after it was cached
        healed = fetch_file(url, str(dest), check_small_fits, POLICY, keep_data=True)
        again = fetch_file(url, str(dest), check_small_fits, POLICY)
        assert server.requests_for("/" + RELPATHS[0]) == 2
    assert healed.ok and not healed.from_cache and healed.attempts == 1 and healed.data == good
    assert dest.read_bytes() == good
    assert again.ok and again.from_cache
    # without a validator the cached file is trusted as it is
    dest.write_bytes(b"not checked")
    assert fetch_file("http://127.0.0.1:9/unreachable", str(dest), None, POLICY).from_cache


def test_cached_file_still_bad_after_a_fresh_download_is_a_failure(tmp_path: Path) -> None:
    write_tree(tmp_path / "remote", RELPATHS[:1])
    dest = tmp_path / "cache" / "a.fits"
    dest.parent.mkdir()
    dest.write_bytes(b"SIMPLE  = truncated")
    config = FaultConfig(fraction=0.0, always_corrupt=frozenset({"/" + RELPATHS[0]}))
    with FaultServer(static_backend(tmp_path / "remote"), config) as server:
        result = fetch_file(server.url + RELPATHS[0], str(dest), check_small_fits, POLICY)
        assert server.requests_for("/" + RELPATHS[0]) == 2  # the download and its one refetch
    assert not result.ok and not result.from_cache
    assert "corrupt after 2 downloads" in result.reason
    assert not dest.exists()


def test_always_corrupt_file_fails_after_exactly_one_refetch(tmp_path: Path) -> None:
    write_tree(tmp_path / "remote", RELPATHS[:1])
    cache = tmp_path / "cache"
    config = FaultConfig(fraction=0.0, always_corrupt=frozenset({"/" + RELPATHS[0]}))
    with FaultServer(static_backend(tmp_path / "remote"), config) as server:
        result = fetch_file(
            server.url + RELPATHS[0], str(cache / "a.fits"), check_small_fits, POLICY
        )
        assert server.requests_for("/" + RELPATHS[0]) == 2
    assert not result.ok and result.attempts == 2
    assert "corrupt after 2 downloads" in result.reason and "not a FITS file" in result.reason
    assert RELPATHS[0] in result.reason
    # nothing was written: neither the file nor a temporary leftover
    assert not cache.exists() or _files_under(cache) == []
    row = result.failure("coadd", "sv3-dark-7")
    assert row == FailureRecord("coadd", "sv3-dark-7", result.url, result.reason, 2)


def test_corrupt_once_then_good_is_fetched(tmp_path: Path) -> None:
    written = write_tree(tmp_path / "remote", RELPATHS[:1])
    config = FaultConfig(fraction=1.0, kinds=("garbage",), max_faults_per_path=1)
    dest = tmp_path / "cache" / "a.fits"
    with FaultServer(static_backend(tmp_path / "remote"), config) as server:
        result = fetch_file(server.url + RELPATHS[0], str(dest), check_small_fits, POLICY)
        assert server.faults["garbage"] == 1
    assert result.ok and result.attempts == 2
    assert dest.read_bytes() == written[RELPATHS[0]]


def test_failed_validation_leaves_no_partial_file(tmp_path: Path) -> None:
    write_tree(tmp_path / "remote", RELPATHS[:1])
    dest = tmp_path / "cache" / "a.fits"
    dest.parent.mkdir()

    def reject(path: Path, url: str) -> None:
        raise ValueError(f"{url}: rejected by the test")

    with FaultServer(static_backend(tmp_path / "remote"), CLEAN) as server:
        result = fetch_file(server.url + RELPATHS[0], str(dest), reject, POLICY)
    assert not result.ok and "rejected by the test" in result.reason
    assert list(dest.parent.iterdir()) == []


def test_validator_bugs_are_not_swallowed(tmp_path: Path) -> None:
    write_tree(tmp_path / "remote", RELPATHS[:1])

    def broken(path: Path, url: str) -> None:
        raise KeyError("bug in the validator")

    server = FaultServer(static_backend(tmp_path / "remote"), CLEAN)
    with server, pytest.raises(KeyError, match="bug in the validator"):
        fetch_file(server.url + RELPATHS[0], str(tmp_path / "a.fits"), broken, POLICY)


def test_404_is_a_failed_result_with_reason(tmp_path: Path) -> None:
    sleep = RecordingSleep()
    with FaultServer(static_backend(tmp_path), CLEAN) as server:
        result = fetch_file(
            server.url + "edr/nothing.fits", str(tmp_path / "x.fits"), None, POLICY,
            clock=RetryClock(random.Random(0), sleep),
        )  # fmt: skip
    assert not result.ok and result.attempts == 1 and sleep.waits == []
    assert "edr/nothing.fits" in result.reason and "HTTP 404" in result.reason
    with pytest.raises(FetchError, match="HTTP 404"):
        result.raise_for_failure()


def test_fetch_all_keeps_job_order_and_reads_local_sources(tmp_path: Path) -> None:
    written = write_tree(tmp_path / "remote", RELPATHS)
    jobs = [
        FetchJob(str(tmp_path / "remote" / rel), str(tmp_path / "cache" / rel))
        for rel in [*RELPATHS, "edr/missing.fits"]
    ]
    results = fetch_all(jobs, check_small_fits, POLICY, concurrency=2)
    assert [r.ok for r in results] == [True, True, True, False]
    assert "not found" in results[3].reason and results[3].attempts == 1
    for rel in RELPATHS:
        assert (tmp_path / "cache" / rel).read_bytes() == written[rel]


def test_failures_table_schema_and_redaction() -> None:
    rows = [
        FailureRecord("cutout", "001/k", "https://h/c?ra=1&token=s3cret", "HTTP 500", 5),
        FailureRecord("coadd", "sv3-dark-7", "s3://desidata/x.fits", "corrupt", 2),
    ]
    table = failures_table(rows)
    assert table.schema == FAILURES_SCHEMA
    assert table.column("attempts").to_pylist() == [5, 2]
    assert "s3cret" not in table.column("url")[0].as_py()
    assert failures_table([]).num_rows == 0
    assert failures_table([]).schema == pa.schema(FAILURES_SCHEMA)
