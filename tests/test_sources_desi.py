"""DesiSource URLs and cache paths, the default FITS validators, and single-file fetches."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from test_sources_support import small_fits

from astroclip_core.formats import FormatError
from astroclip_core.releases import KNOWN_RELEASES
from astroclip_core.sources import layout
from astroclip_core.sources.desi import (
    COADD_VALIDATOR,
    CoaddFile,
    DesiSource,
    coadd_files_for,
)
from astroclip_core.sources.faults import FaultConfig, FaultServer, static_backend
from astroclip_core.sources.fetch import fits_validator
from astroclip_core.sources.http import FetchError, RetryPolicy
from astroclip_core.sources.legacysurvey import LegacySurveySource
from astroclip_core.storage import StorageLayout

REAL_COADD = Path(__file__).parent / "data" / "desi" / "coadd-sv3-dark-26065.fits"
EDR = KNOWN_RELEASES["edr"]
POLICY = RetryPolicy(max_attempts=2, backoff_base_s=0.0, read_timeout_s=5.0)
CLEAN = FaultConfig(fraction=0.0)


def test_urls_and_cache_paths_follow_layout(tmp_path: Path) -> None:
    source = DesiSource(EDR, "https://data.desi.lbl.gov/public")
    assert source.zcatalog_url() == (
        "https://data.desi.lbl.gov/public/edr/spectro/redux/fuji/zcatalog/zall-pix-fuji.fits"
    )
    assert source.coadd_url(CoaddFile("sv3", "dark", 26065)).endswith(
        "edr/spectro/redux/fuji/healpix/sv3/dark/260/26065/coadd-sv3-dark-26065.fits"
    )
    dr1 = DesiSource(KNOWN_RELEASES["dr1"], "s3://desidata/")
    assert (
        dr1.zcatalog_url() == "s3://desidata/dr1/spectro/redux/iron/zcatalog/v1/zall-pix-iron.fits"
    )


def test_coadd_pixels_are_the_distinct_files_of_the_targets() -> None:
    coadds = coadd_files_for(
        np.array(["sv3", "sv3", "main", "sv3"]),
        np.array(["dark", "dark", "bright", "bright"]),
        np.array([26065, 26065, 7, 26065]),
    )
    assert coadds == [
        CoaddFile("main", "bright", 7),
        CoaddFile("sv3", "bright", 26065),
        CoaddFile("sv3", "dark", 26065),
    ]
    with pytest.raises(ValueError, match="one value per target"):
        coadd_files_for(["sv3"], ["dark"], np.array([1, 2]))


def test_coadd_validator_accepts_a_real_coadd_and_rejects_damage(tmp_path: Path) -> None:
    data = REAL_COADD.read_bytes()
    COADD_VALIDATOR(data, "real")
    COADD_VALIDATOR(REAL_COADD, "real")  # a path: headers read from disk, data skipped
    half = tmp_path / "half.fits"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match=r"^https://x/c\.fits: truncated"):
        COADD_VALIDATOR(half, "https://x/c.fits")
    with pytest.raises(FormatError, match="truncated"):
        COADD_VALIDATOR(data[: len(data) // 2], "half")
    with pytest.raises(FormatError, match="not a FITS file"):
        COADD_VALIDATOR(b"<html>oops</html>", "html")
    with pytest.raises(FormatError, match=r"missing HDU\(s\) \['B_FLUX'"):
        COADD_VALIDATOR(small_fits(seed=0), "small")
    with pytest.raises(FormatError, match="at least 3"):
        fits_validator(min_hdus=3)(small_fits(seed=0), "small")


def test_single_file_fetches_return_cache_paths_or_raise(tmp_path: Path) -> None:
    remote, cache = tmp_path / "remote", StorageLayout(str(tmp_path / "cache"))
    coadd_rel = layout.coadd_path(EDR, "sv3", "dark", 26065)
    (remote / coadd_rel).parent.mkdir(parents=True)
    shutil.copyfile(REAL_COADD, remote / coadd_rel)
    sweep = "south/sweep/9.0/sweep-000p000-010p005.fits"
    (remote / "dr9" / sweep).parent.mkdir(parents=True)
    (remote / "dr9" / sweep).write_bytes(small_fits(seed=1))
    with FaultServer(static_backend(remote), CLEAN) as server:
        desi = DesiSource(EDR, server.url)
        path = desi.fetch_coadd(cache, "sv3", "dark", 26065, policy=POLICY)
        assert path == cache.raw_desi(coadd_rel)
        assert Path(path).read_bytes() == REAL_COADD.read_bytes()
        with pytest.raises(FetchError, match=r"zall-pix-fuji\.fits: .*HTTP 404"):
            desi.fetch_zcatalog(cache, policy=POLICY)
        legacy = LegacySurveySource(root_url=server.url + "dr9/")
        assert legacy.fetch_sweep(cache, "south", 0, 0, policy=POLICY) == cache.raw_legacysurvey(
            "dr9", sweep
        )
        assert legacy.fetch_sweep(cache, "north", 150, 30, policy=POLICY) is None
