"""LegacySurveySource: sweep boxes, cutout cache keys, and the cutout-source contract."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_sources_support import cutout_backend, render_cutout

from astroclip_core.formats.legacysurvey import read_cutout
from astroclip_core.sources.faults import FaultConfig, FaultServer, Response
from astroclip_core.sources.http import RetryPolicy
from astroclip_core.sources.legacysurvey import (
    LegacySurveySource,
    SweepBox,
    sweep_boxes_covering,
)
from astroclip_core.storage import StorageLayout

POLICY = RetryPolicy(max_attempts=3, backoff_base_s=0.0, read_timeout_s=5.0)
CLEAN = FaultConfig(fraction=0.0)
SIZE_PIX = 32  # small stamps keep the tests fast; the contract does not depend on the size


def _source(server: FaultServer) -> LegacySurveySource:
    return LegacySurveySource(
        root_url=server.url + "dr9/",
        cutout_url=server.url + "viewer/fits-cutout",
        size_pix=SIZE_PIX,
    )


def test_sweep_boxes_cover_margin_wrap_and_north_south_join() -> None:
    boxes = sweep_boxes_covering(358.0, 3.0, 1.0, 6.0)
    assert boxes == [
        SweepBox("south", 0, 0),
        SweepBox("south", 0, 5),
        SweepBox("south", 350, 0),
        SweepBox("south", 350, 5),
    ]
    straddle = sweep_boxes_covering(150.0, 151.0, 31.0, 33.0)
    assert {b.region for b in straddle} == {"north", "south"}
    assert {b.dec_min_deg for b in straddle} == {30}
    assert SweepBox("south", 210, 0).relpath == "south/sweep/9.0/sweep-210p000-220p005.fits"
    with pytest.raises(ValueError, match="dec_min_deg"):
        sweep_boxes_covering(0.0, 1.0, 5.0, 1.0)


def test_cutout_key_rounds_like_the_query_and_includes_parameters() -> None:
    source = LegacySurveySource()
    assert source.cutout_key(10.123456789, -5.5) == "010/010.1234568m05.5000000-grz-0.262-152"
    assert source.cutout_key(10.12345681, -5.5) == source.cutout_key(10.123456789, -5.5)
    assert source.cutout_key(370.0, 1.0) == source.cutout_key(10.0, 1.0)
    other = LegacySurveySource(size_pix=64)
    assert other.cutout_key(10.0, 1.0) != source.cutout_key(10.0, 1.0)
    url = source.cutout_request_url(10.0, 1.0)
    assert url.startswith("https://www.legacysurvey.org/viewer/fits-cutout?ra=10.0000000&dec=")
    assert "layer=ls-dr9" in url and "size=152" in url


def test_fetch_cutouts_aligned_cached_and_no_data_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="astroclip_core.sources")
    ra = np.array([10.0, 20.5, 30.25, 40.0])
    dec = np.array([1.0, -70.0, 5.0, -65.0])  # two positions south of -60: z band empty
    cache = StorageLayout(str(tmp_path))
    with FaultServer(cutout_backend, CLEAN) as server:
        source = _source(server)
        first = source.fetch_cutouts(
            ra, dec, cache, concurrency=2, policy=POLICY, reader=read_cutout
        )
        count = server.request_count
        second = source.fetch_cutouts(ra, dec, cache, concurrency=2, policy=POLICY)
        assert server.request_count == count == 4
    assert "fetched 4/4 cutouts (0 failed)" in caplog.text
    assert "2 with an all-zero band" in caplog.text
    assert first.images.shape == (4, 3, SIZE_PIX, SIZE_PIX) and first.images.dtype == np.float32
    assert first.ok.all() and first.n_failed == 0 and not first.from_cache.any()
    for i in range(4):
        np.testing.assert_array_equal(first.images[i], render_cutout(ra[i], dec[i], SIZE_PIX))
    assert first.n_no_data == 2
    np.testing.assert_array_equal(first.no_data_bands[:, 2], [False, True, False, True])
    assert not first.no_data_bands[:, :2].any()
    assert second.from_cache.all() and (second.attempts == 0).all()
    np.testing.assert_array_equal(second.images, first.images)
    cached = Path(cache.cutout_cache("dr9", "ls-dr9", source.cutout_key(ra[0], dec[0])))
    assert cached.is_file()


def test_failed_cutouts_are_left_out_with_reasons(tmp_path: Path) -> None:
    def backend(target: str) -> Response:
        if "ra=20.0000000" in target:
            return Response(403, b"forbidden\n", "text/plain")
        return cutout_backend(target)

    cache = StorageLayout(str(tmp_path))
    with FaultServer(backend, CLEAN) as server:
        batch = _source(server).fetch_cutouts(
            np.array([10.0, 20.0]), np.array([0.0, 0.0]), cache, concurrency=2, policy=POLICY
        )
    assert batch.ok.tolist() == [True, False] and batch.n_failed == 1
    assert batch.images.shape == (1, 3, SIZE_PIX, SIZE_PIX)
    np.testing.assert_array_equal(batch.images[0], render_cutout(10.0, 0.0, SIZE_PIX))
    assert not batch.no_data_bands[1].any()
    assert "HTTP 403" in batch.reasons[1] and batch.reasons[0] == ""
    (row,) = batch.failures()
    assert row.kind == "cutout" and row.key == batch.keys[1] and row.attempts == 1


def test_concurrency_is_capped(tmp_path: Path) -> None:
    in_flight, peak, lock = [0], [0], threading.Lock()

    def slow_backend(target: str) -> Response:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.05)  # hold the slot so that overlapping requests would be seen
        with lock:
            in_flight[0] -= 1
        return cutout_backend(target)

    ra, dec = np.linspace(1.0, 9.0, 9), np.zeros(9)
    with FaultServer(slow_backend, CLEAN) as server:
        batch = _source(server).fetch_cutouts(
            ra, dec, StorageLayout(str(tmp_path)), concurrency=3, policy=POLICY
        )
    assert batch.ok.all()
    assert 1 <= peak[0] <= 3


def test_fetch_cutouts_rejects_mismatched_positions(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ra_deg"):
        LegacySurveySource().fetch_cutouts(
            np.zeros(3), np.zeros(2), StorageLayout(str(tmp_path)), policy=POLICY
        )


def test_damaged_cached_cutout_is_fetched_again_not_failed(tmp_path: Path) -> None:
    ra, dec = np.array([10.0, 20.0]), np.array([0.0, 1.0])
    cache = StorageLayout(str(tmp_path))
    with FaultServer(cutout_backend, CLEAN) as server:
        source = _source(server)
        first = source.fetch_cutouts(ra, dec, cache, concurrency=2, policy=POLICY)
        cached = Path(cache.cutout_cache("dr9", "ls-dr9", source.cutout_key(ra[0], dec[0])))
        good = cached.read_bytes()
        cached.write_bytes(good[: len(good) // 2])  # truncated after it was cached
        healed = source.fetch_cutouts(ra, dec, cache, concurrency=2, policy=POLICY)
        assert server.request_count == 3
    assert healed.ok.all() and healed.n_failed == 0 and healed.failures() == []
    assert healed.from_cache.tolist() == [False, True]
    np.testing.assert_array_equal(healed.images, first.images)
    assert cached.read_bytes() == good


def test_no_positions_give_an_empty_batch(tmp_path: Path) -> None:
    batch = LegacySurveySource().fetch_cutouts(
        np.array([]), np.array([]), StorageLayout(str(tmp_path)), policy=POLICY
    )
    assert batch.images.shape == (0, 3, 152, 152) and batch.n_failed == 0 and batch.failures() == []
