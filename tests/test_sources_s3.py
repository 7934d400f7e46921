"""s3:// roots read anonymously through s3fs, against a real moto server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import s3fs
from moto.server import ThreadedMotoServer
from test_sources_support import check_small_fits, small_fits

from astroclip_core.releases import KNOWN_RELEASES, Release, discover_releases
from astroclip_core.sources import layout
from astroclip_core.sources.desi import CoaddFile, DesiSource
from astroclip_core.sources.http import RetryPolicy
from astroclip_core.storage import StorageLayout

BUCKET = "desidata"
EDR = KNOWN_RELEASES["edr"]
DR1 = KNOWN_RELEASES["dr1"]  # its catalogue lies in zcatalog/v1
COADDS = [CoaddFile("sv3", "dark", 26065), CoaddFile("sv3", "bright", 7)]
POLICY = RetryPolicy(max_attempts=2, backoff_base_s=0.0, connect_timeout_s=2.0, read_timeout_s=5.0)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 holding a small copy of the DESI bucket layout."""
    with pytest.MonkeyPatch.context() as mp:
        # fake credentials for the boto3 client that fills the bucket (reads are anonymous)
        for name, value in [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ]:
            mp.setenv(name, value)
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        mp.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET)
        # objects are public-read like the real bucket's, so unsigned (anonymous) GETs work
        for i, coadd in enumerate(COADDS):
            key = layout.coadd_path(EDR, coadd.survey, coadd.program, coadd.coadd_pixel)
            client.put_object(Bucket=BUCKET, Key=key, Body=small_fits(seed=i), ACL="public-read")
        client.put_object(Bucket=BUCKET, Key=layout.zcatalog_path(DR1), Body=b"x")
        client.put_object(Bucket=BUCKET, Key=layout.zcatalog_path(EDR), Body=b"x")
        # a second production without a zcatalog: discovery takes the one that has it
        client.put_object(Bucket=BUCKET, Key="edr/spectro/redux/fuji_pre/healpix/x", Body=b"x")
        client.put_object(Bucket=BUCKET, Key="papers/readme.txt", Body=b"not a release")
        try:
            yield endpoint
        finally:
            server.stop()


def test_s3_coadds_are_fetched_validated_and_cached(s3_endpoint: str, tmp_path: Path) -> None:
    source = DesiSource(EDR, "s3://desidata/", s3_endpoint_url=s3_endpoint)
    cache = StorageLayout(str(tmp_path))
    first = source.fetch_coadds(COADDS, cache, check_small_fits, POLICY, concurrency=2)
    assert [r.ok for r in first] == [True, True] and [r.attempts for r in first] == [1, 1]
    for i, coadd in enumerate(COADDS):
        relpath = layout.coadd_path(EDR, coadd.survey, coadd.program, coadd.coadd_pixel)
        assert Path(cache.raw_desi(relpath)).read_bytes() == small_fits(seed=i)
    again = source.fetch_coadds(COADDS, cache, check_small_fits, POLICY)
    assert all(r.from_cache and r.attempts == 0 for r in again)


def test_s3_missing_key_fails_without_retry(s3_endpoint: str, tmp_path: Path) -> None:
    source = DesiSource(EDR, "s3://desidata/", s3_endpoint_url=s3_endpoint)
    (result,) = source.fetch_coadds(
        [CoaddFile("main", "dark", 12345)], StorageLayout(str(tmp_path)), policy=POLICY
    )
    assert not result.ok and result.attempts == 1
    assert "coadd-main-dark-12345.fits" in result.reason and "not found" in result.reason


def test_s3_discover_releases(s3_endpoint: str) -> None:
    releases = discover_releases("s3://desidata/", s3_endpoint_url=s3_endpoint)
    assert releases == [Release("dr1", "iron", "zcatalog/v1"), Release("edr", "fuji", "zcatalog")]


def test_s3_endpoint_from_environment(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    result = DesiSource(EDR, "s3://desidata/").fetch(
        layout.coadd_path(EDR, "sv3", "dark", 26065), StorageLayout(str(tmp_path)), policy=POLICY
    )
    assert result.ok and Path(result.dest_url).read_bytes() == small_fits(seed=0)


def test_s3_cache_root_gets_only_whole_validated_files(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)  # the cache is written with credentials
    s3fs.S3FileSystem.clear_instance_cache()  # no cached filesystem of another endpoint
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="cache")
    source = DesiSource(EDR, "s3://desidata/", s3_endpoint_url=s3_endpoint)
    cache = StorageLayout("s3://cache/run")
    relpath = layout.coadd_path(EDR, "sv3", "dark", 26065)
    key = cache.raw_desi(relpath).removeprefix("s3://")
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)
    try:
        first = source.fetch(relpath, cache, check_small_fits, POLICY)
        assert first.ok and not first.from_cache and fs.cat_file(key) == small_fits(seed=0)
        assert fs.find("cache") == [key]  # streamed through a local temporary, never uploaded
        fs.pipe_file(key, b"SIMPLE  = damaged")
        healed = source.fetch(relpath, cache, check_small_fits, POLICY)
        assert healed.ok and not healed.from_cache and healed.attempts == 1
        assert fs.cat_file(key) == small_fits(seed=0)
        again = source.fetch(relpath, cache, check_small_fits, POLICY)
        assert again.from_cache and again.n_bytes == len(small_fits(seed=0))
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
