"""The production instance, deploy/dagster.yaml, on a real PostgreSQL server.

A throwaway server is started from the installed binaries (tests/postgres_server.py); without
them the tests fail and say what to install. DAGSTER_HOME holds a copy of deploy/dagster.yaml and
the connection settings, password included, are in the environment only. The catalogues of the
tiny sky's three releases are materialized in this process; then a real ``dagster-daemon`` loads
tests/postgres_location.py, whose sensor asks for 6 partitioned ingest runs, and the daemon's
run queue launches them, each in its own process. The SQLite instance (dagster_home/dagster.yaml)
would let only 3 of them run at once.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

from astroclip_core.sky.healpix import parse_partition_key
from astroclip_core.storage import StorageLayout
from pipelines import catalog
from pipelines.partitions import register_release, sky_partitions
from tests import postgres_server
from tests.pipeline_support import make_tiny_sky, resources
from tests.postgres_location import INGEST_RUNS, SKY_ENV
from tests.postgres_server import (
    PostgresNotInstalledError,
    PostgresServer,
    find_bindir,
    running_postgres,
)

REPO = Path(__file__).resolve().parents[1]
DEPLOY_INSTANCE = REPO / "deploy" / "dagster.yaml"
LOCATION = REPO / "tests" / "postgres_location.py"
RELEASES = ["edr", "dr1", "dr2"]
INGEST_ASSETS = ["spectra", "imaging_sources", "crossmatch", "cutouts", "pairs"]
RUNS_TIMEOUT_S = 300
CUTOUT_POOL = "legacysurvey_cutouts"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    try:
        find_bindir()
    except PostgresNotInstalledError as err:
        pytest.fail(str(err))
    with running_postgres(password=secrets.token_urlsafe(16)) as server:
        yield server


@pytest.fixture(scope="module")
def deploy_home(tmp_path_factory, postgres) -> Path:
    """A DAGSTER_HOME holding deploy/dagster.yaml as it is shipped."""
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(DEPLOY_INSTANCE, home / "dagster.yaml")
    return home


@contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in variables.items():
            patch.setenv(name, value)
        yield


@contextmanager
def _daemon(log: Path) -> Iterator[subprocess.Popen]:
    """``dagster-daemon run`` over the test location, in its own process group."""
    exe = Path(sys.executable).with_name("dagster-daemon")
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(exe), "run", "-f", str(LOCATION), "-d", str(REPO)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            # The daemon stops on SIGTERM; the code server it started does not, so what is left
            # of the process group (that server, and any run process) is killed after it.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _wait_for_runs(
    instance: dg.DagsterInstance, daemon: subprocess.Popen, log: Path
) -> list[dg.RunRecord]:
    deadline = time.monotonic() + RUNS_TIMEOUT_S
    records: list[dg.RunRecord] = []
    while time.monotonic() < deadline:
        records = instance.get_run_records(dg.RunsFilter(job_name="ingest_job"))
        if len(records) >= INGEST_RUNS and all(r.dagster_run.is_finished for r in records):
            return records
        if daemon.poll() is not None:
            break
        time.sleep(1)
    statuses = [r.dagster_run.status.value for r in records]
    pytest.fail(
        f"{INGEST_RUNS} ingest runs did not finish within {RUNS_TIMEOUT_S} s (daemon exit "
        f"code {daemon.poll()}); runs: {statuses}\n{log.read_text()[-3000:]}"
    )


@pytest.fixture(scope="module")
def concurrent_ingest(tmp_path_factory, postgres, deploy_home):
    """The catalogues, then 6 ingest runs launched by the daemon; yields what they recorded."""
    base = tmp_path_factory.mktemp("pg_ingest")
    sky = make_tiny_sky(base / "sky", RELEASES)
    storage = base / "storage"
    variables = {
        **postgres.dagster_env(),
        "DAGSTER_HOME": str(deploy_home),
        "ASTROCLIP_STORAGE": str(storage),
        SKY_ENV: str(sky),
    }
    with _environment(variables), dg.DagsterInstance.get() as instance:
        res = resources(str(storage), sky)
        for release in RELEASES:
            found = register_release(instance, release, res["desi"], res["sample_sky"])
            dg.materialize(
                [catalog.release_catalog],
                partition_key=release,
                instance=instance,
                resources={**res, "desi": res["desi"].for_release(found)},
            )
        # the set-up step README and deploy/dagster.yaml give for a new database
        dagster = Path(sys.executable).with_name("dagster")
        subprocess.run(
            [str(dagster), "instance", "concurrency", "set", CUTOUT_POOL, "2"],
            check=True,
            capture_output=True,
        )
        log = base / "daemon.log"
        with _daemon(log) as daemon:
            records = _wait_for_runs(instance, daemon, log)
        yield {"instance": instance, "records": records, "storage": storage}


def _failures(events: list) -> str:
    """The failure messages of a run's events, with their errors."""
    failed = [e for e in events if e.dagster_event.is_failure or e.dagster_event.is_run_failure]
    return "\n".join(
        f"{e.dagster_event_type}: {e.message} {getattr(e.dagster_event.event_specific_data, 'error', '')}"
        for e in failed
    )


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of (start, end) spans that hold one moment."""
    edges = sorted(
        [(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans],
        key=lambda edge: (edge[0], edge[1]),  # an end at the same instant as a start comes first
    )
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def test_missing_server_binaries_fail_and_say_what_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(postgres_server, "DEBIAN_BINDIRS", "/nonexistent/postgresql/*/bin")
    with pytest.raises(PostgresNotInstalledError, match="apt-get install postgresql"):
        find_bindir()


def test_deploy_instance_is_postgres_without_the_sqlite_run_cap(postgres, deploy_home):
    variables = {**postgres.dagster_env(), "DAGSTER_HOME": str(deploy_home)}
    with _environment(variables), dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        cap = instance.get_concurrency_config().run_queue_config.max_concurrent_runs
        assert cap >= INGEST_RUNS, cap


def test_connection_settings_come_from_the_environment(postgres):
    """The server accepts only its password, which exists nowhere but in the environment."""
    settings = yaml.safe_load(DEPLOY_INSTANCE.read_text())["storage"]["postgres"]["postgres_db"]
    from_env = {k: v["env"] for k, v in settings.items() if isinstance(v, dict)}
    assert set(from_env.values()) == set(postgres.dagster_env())
    assert postgres.password not in DEPLOY_INSTANCE.read_text()


def test_six_ingest_runs_were_queued_and_ran_at_once(concurrent_ingest):
    instance, records = concurrent_ingest["instance"], concurrent_ingest["records"]
    assert len(records) == INGEST_RUNS
    for record in records:
        run = record.dagster_run
        events = [e for e in instance.all_logs(run.run_id) if e.dagster_event is not None]
        assert run.status == dg.DagsterRunStatus.SUCCESS, _failures(events)
        types = {e.dagster_event_type for e in events}
        assert {dg.DagsterEventType.RUN_ENQUEUED, dg.DagsterEventType.RUN_STARTING} <= types
    # with the SQLite cap the queue would have held all but 3 back
    assert _most_at_once([(r.start_time, r.end_time) for r in records]) == INGEST_RUNS


def test_the_cutout_pool_held_across_the_concurrent_runs(concurrent_ingest):
    """At most 2 cutout steps of the 6 runs at once: the pool's slots are in PostgreSQL."""
    instance, records = concurrent_ingest["instance"], concurrent_ingest["records"]
    assert instance.event_log_storage.get_concurrency_info(CUTOUT_POOL).slot_count == 2
    spans = []
    for record in records:
        times = {
            e.dagster_event_type: e.timestamp
            for e in instance.all_logs(record.dagster_run.run_id)
            if e.dagster_event is not None and e.step_key == "cutouts"
        }
        spans.append(
            (times[dg.DagsterEventType.STEP_START], times[dg.DagsterEventType.STEP_SUCCESS])
        )
    assert _most_at_once(spans) <= 2


def test_runs_events_and_materializations_are_in_postgres(concurrent_ingest, postgres, deploy_home):
    instance, records = concurrent_ingest["instance"], concurrent_ingest["records"]
    run_ids = sorted(r.dagster_run.run_id for r in records)
    keys = sorted(instance.get_dynamic_partitions(sky_partitions.name))
    assert len(keys) == 5
    for asset in INGEST_ASSETS:
        found = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset)), limit=100
        ).records
        assert sorted(r.run_id for r in found) == run_ids, asset
        assert {r.partition_key for r in found} == set(keys), asset
    layout = StorageLayout(str(concurrent_ingest["storage"]))
    for key in keys:
        assert Path(layout.pairs_file(*parse_partition_key(key))).is_file(), key

    conn = psycopg2.connect(
        host=postgres.host,
        port=postgres.port,
        user=postgres.username,
        password=postgres.password,
        dbname=postgres.db_name,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs WHERE run_id = ANY(%s)", (run_ids,))
            assert cur.fetchone()[0] == INGEST_RUNS
            cur.execute(
                "SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = ANY(%s) "
                "GROUP BY dagster_event_type",
                (run_ids,),
            )
            counts = dict(cur.fetchall())
    finally:
        conn.close()
    steps = INGEST_RUNS * len(INGEST_ASSETS)
    assert counts[dg.DagsterEventType.ASSET_MATERIALIZATION.value] == steps
    assert counts[dg.DagsterEventType.STEP_SUCCESS.value] == steps
    assert counts[dg.DagsterEventType.RUN_SUCCESS.value] == INGEST_RUNS
    assert not list(deploy_home.rglob("*.db")), "the instance wrote SQLite files"
