"""End to end: files and cutouts fetched through injected faults equal those from a clean server."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from test_sources_support import check_small_fits, cutout_backend, write_tree

from astroclip_core.releases import KNOWN_RELEASES
from astroclip_core.sources import layout
from astroclip_core.sources.desi import CoaddFile, DesiSource, coadd_failures
from astroclip_core.sources.faults import (
    FAULT_KINDS,
    Backend,
    FaultConfig,
    FaultServer,
    Response,
    proxy_backend,
    static_backend,
)
from astroclip_core.sources.http import RetryClock, RetryPolicy
from astroclip_core.sources.legacysurvey import LegacySurveySource, SweepBox
from astroclip_core.storage import StorageLayout

EDR = KNOWN_RELEASES["edr"]
COADDS = [CoaddFile("sv3", "dark", p) for p in (7, 99, 100, 263, 9999, 26065)]
SWEEPS = [SweepBox("south", 0, 0), SweepBox("south", 350, -5), SweepBox("north", 150, 30)]
RA = np.array([0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5])
DEC = np.array([-1.0, 0.0, 1.0, 2.0, -70.0, 3.0, 4.0, -2.0, 0.5, 1.25])
SIZE_PIX = 48
# Survives two faults per target (the server's bound) plus one more: reliable, and fast
# because waits are capped far below the server's Retry-After.
POLICY = RetryPolicy(
    max_attempts=4, backoff_base_s=0.01, backoff_max_s=0.05, retry_after_max_s=0.05,
    connect_timeout_s=2.0, read_timeout_s=0.5,
)  # fmt: skip
FAULTS = FaultConfig(seed=14, fraction=0.35, retry_after_s=1.0, stall_s=1.0, max_faults_per_path=2)


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("remote")
    desi = [
        layout.SAMPLESKY_DESI_PREFIX + layout.coadd_path(EDR, p.survey, p.program, p.coadd_pixel)
        for p in COADDS
    ]
    sweeps = [layout.SAMPLESKY_LEGACYSURVEY_PREFIX + b.relpath for b in SWEEPS]
    write_tree(root, desi + sweeps)
    return root


def _site(folder: Path) -> Backend:
    """The sample-sky URL layout: static trees plus the cutout endpoint."""
    files = static_backend(folder)

    def answer(target: str) -> Response:
        if target.startswith("/" + layout.SAMPLESKY_CUTOUT_PATH):
            return cutout_backend(target)
        return files(target)

    return answer


def _fetch_everything(base_url: str, cache: StorageLayout) -> tuple[list, list, object]:
    desi = DesiSource(EDR, base_url + layout.SAMPLESKY_DESI_PREFIX)
    legacy = LegacySurveySource(
        root_url=base_url + layout.SAMPLESKY_LEGACYSURVEY_PREFIX,
        cutout_url=base_url + layout.SAMPLESKY_CUTOUT_PATH,
        size_pix=SIZE_PIX,
    )
    clock = RetryClock(random.Random(0))
    coadds = desi.fetch_coadds(COADDS, cache, check_small_fits, POLICY, concurrency=3, clock=clock)
    sweeps = legacy.fetch_sweeps(SWEEPS, cache, check_small_fits, POLICY, clock=clock)
    cutouts = legacy.fetch_cutouts(RA, DEC, cache, concurrency=3, policy=POLICY, clock=clock)
    return coadds, sweeps, cutouts


def test_faulty_server_gives_identical_results_after_retries(remote: Path, tmp_path: Path) -> None:
    clean_cache, faulty_cache = (
        StorageLayout(str(tmp_path / "a")),
        StorageLayout(str(tmp_path / "b")),
    )
    with FaultServer(_site(remote), FaultConfig(fraction=0.0)) as clean:
        clean_coadds, clean_sweeps, clean_cutouts = _fetch_everything(clean.url, clean_cache)
        # the faulty server proxies the clean one, as it would proxy the sample sky
        with FaultServer(proxy_backend(clean.url), FAULTS) as faulty:
            coadds, sweeps, cutouts = _fetch_everything(faulty.url, faulty_cache)
            served = dict(faulty.faults)
    assert set(served) == set(FAULT_KINDS), f"seed should exercise every fault, got {served}"
    assert all(r.ok for r in clean_coadds + clean_sweeps) and clean_cutouts.ok.all()
    assert coadd_failures(COADDS, coadds) == []
    assert all(r.ok for r in sweeps) and cutouts.n_failed == 0
    assert sum(r.attempts for r in coadds + sweeps) > len(COADDS) + len(SWEEPS)
    for clean_r, faulty_r in zip(clean_coadds + clean_sweeps, coadds + sweeps, strict=True):
        assert Path(faulty_r.dest_url).read_bytes() == Path(clean_r.dest_url).read_bytes()
    np.testing.assert_array_equal(cutouts.images, clean_cutouts.images)
    np.testing.assert_array_equal(cutouts.no_data_bands, clean_cutouts.no_data_bands)
    assert cutouts.n_no_data == 1
    leftovers = [p for p in (tmp_path / "b").rglob("*.tmp")]
    assert leftovers == []


def test_fault_decisions_are_deterministic_and_bounded() -> None:
    config = FaultConfig(seed=9, fraction=0.5, max_faults_per_path=2)
    first = [config.decide(f"/f{i}.fits", a) for i in range(50) for a in range(4)]
    again = [config.decide(f"/f{i}.fits", a) for i in range(50) for a in range(4)]
    assert first == again
    assert all(config.decide(f"/f{i}.fits", 2) is None for i in range(50))
    faulted = sum(f is not None for f in first) / 100  # 100 of the draws are attempts 0 and 1
    assert 0.3 < faulted < 0.7
    with pytest.raises(ValueError, match="kinds"):
        FaultConfig(kinds=("explode",))
