"""The ETL is robust to a faulty network and runs unchanged on S3 storage.

- Fault injection: the sources go through a loopback proxy that answers 20% of requests with
  500, 429 + Retry-After, a stall past the client timeout, a truncated body or non-FITS bytes.
  The pairs must equal those of a fault-free run.
- S3: the whole ETL with ``ASTROCLIP_STORAGE``-style root ``s3://bucket/prefix`` on a moto
  server started by the test; its pairs must equal the local run's.
"""

from __future__ import annotations

import socket

import dagster as dg
import fitsio
import pytest
import s3fs

from astroclip_core.samplesky.lazy import coadd_relpaths, sky_file_bytes
from astroclip_core.sources.faults import FaultConfig, FaultServer, proxy_backend
from astroclip_core.sources.layout import (
    SAMPLESKY_CUTOUT_PATH,
    SAMPLESKY_DESI_PREFIX,
    SAMPLESKY_LEGACYSURVEY_PREFIX,
)
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.interim import read_failures
from pipelines.resources import RetrySettings
from pipelines.runner import RunOptions, run_all
from tests.pipeline_support import make_tiny_sky, read_pairs_folder, resources, tables_equal

# Short timeouts so a stall fault passes the client's read timeout quickly, yet long enough for
# a cutout the sample sky renders on a loaded machine.
FAULT_RETRY = RetrySettings(
    max_attempts=6,
    backoff_base_s=0.05,
    backoff_max_s=0.5,
    connect_timeout_s=2.0,
    read_timeout_s=2.0,
)


def _etl(base, name, res) -> None:
    home = base / f"home-{name}"
    home.mkdir()
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        run_all(RunOptions(release="edr", skip_training=True), res, instance)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """Sky plus a fault-free local ETL run."""
    base = tmp_path_factory.mktemp("faults")
    sky = make_tiny_sky(base / "sky", ["edr"])
    storage = str(base / "clean")
    _etl(base, "clean", resources(storage, sky))
    return base, sky, read_pairs_folder(StorageLayout(storage).pairs_dir("edr"))


def _etl_through(base, sky, name: str, config: FaultConfig) -> tuple[str, FaultServer]:
    """Run the ETL with every source behind a fault-injecting proxy of the sample sky."""
    sample_sky = resources(str(base / "unused"), sky)["sample_sky"]
    with (
        sample_sky.serving(generate_missing=False) as server,
        FaultServer(proxy_backend(server.base_url), config) as faulty,
    ):
        storage = str(base / name)
        res = resources(
            storage,
            sky,
            desi_url=faulty.url + SAMPLESKY_DESI_PREFIX,
            sweep_url=faulty.url + SAMPLESKY_LEGACYSURVEY_PREFIX,
            cutout_url=faulty.url + SAMPLESKY_CUTOUT_PATH,
            retry=FAULT_RETRY,
        )
        _etl(base, name, res)
    return storage, faulty


def test_etl_through_faults_equals_fault_free_run(clean_run):
    base, sky, clean = clean_run
    config = FaultConfig(
        seed=7, fraction=0.2, retry_after_s=0.2, stall_s=FAULT_RETRY.read_timeout_s + 1.0
    )
    storage, faulty = _etl_through(base, sky, "faulty", config)
    kinds = {kind for kind, n in faulty.faults.items() if n > 0}
    faulty_pairs = read_pairs_folder(StorageLayout(storage).pairs_dir("edr"))
    assert len(kinds) >= 3, f"too few fault kinds were exercised: {kinds}"
    assert faulty_pairs.num_rows == clean.num_rows > 0
    assert tables_equal(clean, faulty_pairs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def moto_s3(monkeypatch):
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
    fs.mkdir("astroclip-test")
    yield endpoint
    server.stop()


def test_etl_on_s3_storage_equals_local_run(clean_run, moto_s3):
    base, sky, clean = clean_run
    root = "s3://astroclip-test/run"
    _etl(base, "s3", resources(root, sky))
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_s3})
    fs.invalidate_cache()
    layout = StorageLayout(root)
    on_s3 = read_pairs_folder(layout.pairs_dir("edr").removeprefix("s3://"), filesystem=fs)
    assert tables_equal(clean, on_s3)
    assert fs.exists(layout.hf_dir("edr").removeprefix("s3://") + "/README.md")
    assert fs.exists(layout.catalog_file("edr").removeprefix("s3://"))


def test_a_file_that_stays_corrupt_is_recorded_and_the_partition_goes_on(clean_run):
    base, sky, clean = clean_run
    relpath = coadd_relpaths(sky)[0]  # drawn by the server on request, not on disk
    bad_path = "/" + SAMPLESKY_DESI_PREFIX + relpath
    coadd = base / "bad-coadd.fits"
    coadd.write_bytes(sky_file_bytes(sky, relpath))
    config = FaultConfig(seed=1, fraction=0.0, always_corrupt=frozenset({bad_path}))
    storage, faulty = _etl_through(base, sky, "corrupt", config)
    assert faulty.requests_for(bad_path) == 2  # fetched again once, then given up
    layout = StorageLayout(storage)
    failures = read_failures(layout, "spectra", "edr", 1703)
    assert failures.column("kind").to_pylist() == ["coadd"]
    assert "coadd" in failures.column("url")[0].as_py()
    got = read_pairs_folder(layout.pairs_dir("edr"))
    lost = set(clean.column("targetid").to_pylist()) - set(got.column("targetid").to_pylist())
    in_bad_file = set(fitsio.read(coadd, ext="FIBERMAP", columns=["TARGETID"])["TARGETID"].tolist())
    # A TARGETID observed in two surveys is read from its primary row's coadd only, so the
    # lost pairs are those of the bad file, not necessarily all of them.
    assert lost and lost <= in_bad_file
    assert got.num_rows == clean.num_rows - len(lost)
