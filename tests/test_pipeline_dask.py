"""The ingest on a real Dask cluster: a scheduler and two workers on 127.0.0.1 (the `dask` CLI).

Every partition of the tiny sky's dr1 (two pixels) goes through the cluster, as runs of
``ingest_job`` on the dask executor, and the pairs equal an in-process run's byte for byte.
The cutout steps wait on the workers while another run holds their pool's only slot.
A worker SIGKILLed while it runs a step leaves the run finished, or failed cleanly (marked
failed, naming the partition) and finished by running the same thing again.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dask.distributed import Client

from astroclip_core.storage import StorageLayout
from pipelines.executors import SchedulerUnreachableError, check_scheduler
from pipelines.runner import RunOptions, ingest_job_definition, run_all
from tests.pipeline_support import make_tiny_sky, resources

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DASK = Path(sys.executable).with_name("dask")
RELEASE = "dr1"  # two partitions on the tiny sky
# Every process of the cluster ends by itself after this, should teardown never run.
LIFETIME_S = 300
WAIT_S = 120.0  # the longest wait for a run to reach a step
CUTOUT_POOL = "legacysurvey_cutouts"
POOL_HOLD_S = 3.0  # how long the cutout steps are kept waiting for their pool slot


@dataclass
class Cluster:
    """A scheduler address and the worker processes, by worker name."""

    address: str
    workers: dict[str, subprocess.Popen]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    """`dask scheduler` and two `dask worker --nthreads 1` processes, all killed at the end."""
    logs = tmp_path_factory.mktemp("dask-logs")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []
    try:
        procs.append(
            _start(
                [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port)]
                + ["--no-dashboard", "--idle-timeout", f"{LIFETIME_S}s"],
                logs / "scheduler.log",
            )
        )
        workers = {}
        for name in ("w0", "w1"):
            # No nanny: the worker is this process, so killing it kills the worker.
            workers[name] = _start(
                [str(DASK), "worker", address, "--name", name, "--nthreads", "1", "--no-nanny"]
                + ["--host", "127.0.0.1", "--no-dashboard", "--lifetime", f"{LIFETIME_S}s"]
                + ["--death-timeout", "60s"],
                logs / f"{name}.log",
            )
            procs.append(workers[name])
        with Client(address, timeout="60s", set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
        yield Cluster(address, workers)
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def sky(tmp_path_factory) -> Path:
    """The tiny sample sky with release dr1, shared by every run (read only)."""
    return make_tiny_sky(tmp_path_factory.mktemp("sky"), [RELEASE])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sky) -> dict[str, bytes]:
    """Pairs files (path under pairs/ -> bytes) of an in-process run."""
    base = tmp_path_factory.mktemp("in-process")
    storage = str(base / "storage")
    with _instance(base) as instance:
        run_all(RunOptions(release=RELEASE, skip_training=True), resources(storage, sky), instance)
    pairs = _pairs_files(storage)
    assert len(pairs) == 2
    return pairs


def _instance(base: Path, pool_limit: int | None = None) -> dg.DagsterInstance:
    """A persistent (SQLite) instance under ``base``, which the workers open too.

    ``pool_limit`` caps the steps of every concurrency pool (the cutouts' included).
    """
    home = base / "dagster_home"
    home.mkdir()
    if pool_limit is not None:
        (home / "dagster.yaml").write_text(
            f"concurrency:\n  pools:\n    default_limit: {pool_limit}\n"
        )
    return dg.DagsterInstance.local_temp(str(home))


def _pairs_files(root: str) -> dict[str, bytes]:
    pairs_dir = Path(StorageLayout(root).pairs_dir(RELEASE))
    return {str(p.relative_to(pairs_dir)): p.read_bytes() for p in pairs_dir.rglob("*.parquet")}


_STEP_EVENTS = {
    dg.DagsterEventType.STEP_START,
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
}


def _ingest_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(job_name="ingest_job")))


def _step_event_pids(instance: dg.DagsterInstance, event_type: dg.DagsterEventType) -> set[int]:
    pids = set()
    for run in _ingest_runs(instance):
        for entry in instance.all_logs(run.run_id, of_type=event_type):
            pids.add(entry.dagster_event.pid)
    return pids


def _step_succeeded(instance: dg.DagsterInstance, step_key: str) -> list[str]:
    """Partitions whose ingest run has a success of ``step_key``."""
    return [
        run.tags["dagster/partition"]
        for run in _ingest_runs(instance)
        for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
        if entry.dagster_event.step_key == step_key
    ]


def _step_starts(instance: dg.DagsterInstance, step_key: str) -> list[float]:
    """Timestamps at which ``step_key`` started, in every ingest run."""
    return [
        entry.timestamp
        for run in _ingest_runs(instance)
        for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
        if entry.dagster_event.step_key == step_key
    ]


def _run_in_thread(options: RunOptions, res: dict, instance: dg.DagsterInstance):
    """Start ``run_all`` in a thread; return it and the dict its summary or RuntimeError goes to."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["summary"] = run_all(options, res, instance)
        except RuntimeError as err:
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)  # a hung run must not keep pytest alive
    thread.start()
    return thread, outcome


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_dask_runs_every_partition_on_the_workers_byte_identical(cluster, sky, reference, tmp_path):
    storage = str(tmp_path / "storage")
    options = RunOptions(
        release=RELEASE, skip_training=True, executor="dask", dask_address=cluster.address
    )
    with _instance(tmp_path, pool_limit=1) as instance:
        # Another run holds the cutout pool's only slot: the cutout steps, claiming it where
        # they run, must wait on the workers until it is freed.
        slots = instance.event_log_storage
        slots.initialize_concurrency_limit_to_default(CUTOUT_POOL)
        slots.claim_concurrency_slot(CUTOUT_POOL, "another-run", "cutouts")
        thread, outcome = _run_in_thread(options, resources(storage, sky), instance)
        try:
            _wait_for(
                lambda: len(_step_succeeded(instance, "crossmatch")) == 2, "both crossmatches"
            )
            time.sleep(POOL_HOLD_S)
            freed_at = time.time()
        finally:
            slots.free_concurrency_slot_for_step("another-run", "cutouts")
            thread.join(timeout=240)
        assert "summary" in outcome, outcome
        summary = outcome["summary"]
        assert summary.partitions == [f"{RELEASE}-1702", f"{RELEASE}-1703"]
        cutout_starts = _step_starts(instance, "cutouts")
        assert len(cutout_starts) == 2 and min(cutout_starts) > freed_at, (cutout_starts, freed_at)
        runs = _ingest_runs(instance)
        assert sorted(r.tags["dagster/partition"] for r in runs) == summary.partitions
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert all("dask" in r.run_config["execution"]["config"] for r in runs)
        # Every step ran in a worker process, none in this one.
        worker_pids = {p.pid for p in cluster.workers.values()}
        step_pids = _step_event_pids(instance, dg.DagsterEventType.STEP_SUCCESS)
        assert step_pids and step_pids <= worker_pids, (step_pids, worker_pids)
        for key in ("spectra", "imaging_sources", "crossmatch", "cutouts", "pairs"):
            done = instance.get_materialized_partitions(dg.AssetKey(key))
            assert done == set(summary.partitions), key
    assert _pairs_files(storage) == reference


@pytest.mark.parametrize(
    ("config", "chosen"),
    [
        ({}, {"multiprocess": {"max_concurrent": None, "retries": {"enabled": {}}}}),
        ({"in_process": {}}, {"in_process": {"retries": {"enabled": {}}}}),
        ({"dask": {}}, {"dask": {"cluster": {"local": {}}}}),
        (
            {"dask": {"cluster": {"existing": {"address": "tcp://10.1.2.3:8786"}}}},
            {"dask": {"cluster": {"existing": {"address": "tcp://10.1.2.3:8786"}}}},
        ),
    ],
)
def test_ingest_job_executor_chosen_by_run_config(config, chosen):
    run_config = {"execution": {"config": config}} if config else {}
    resolved = dg.validate_run_config(ingest_job_definition(), run_config)
    assert list(resolved["execution"].values()) == [chosen]


def test_unknown_executor_or_cluster_refused():
    with pytest.raises(dg.DagsterInvalidConfigError, match="nosuch"):
        dg.validate_run_config(
            ingest_job_definition(),
            {"execution": {"config": {"dask": {"cluster": {"nosuch": {}}}}}},
        )
    with pytest.raises(ValueError, match="executor 'spark' is not one of"):
        RunOptions(executor="spark")
    with pytest.raises(ValueError, match="tcp://h:1.*needs the dask executor"):
        RunOptions(executor="multiprocess", dask_address="tcp://h:1")


def test_scheduler_address_checked_before_any_work():
    with socket.socket() as sock:  # bound, never listening: nothing answers there
        sock.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
        with pytest.raises(SchedulerUnreachableError, match=address):
            check_scheduler(address, timeout_s=2)
    with pytest.raises(SchedulerUnreachableError, match="127.0.0.1:8786.*not a Dask scheduler"):
        check_scheduler("127.0.0.1:8786", timeout_s=2)


def _kill_a_worker_inside_a_step(
    cluster: Cluster, instance: dg.DagsterInstance, stop: threading.Event
) -> tuple[str, str] | None:
    """SIGKILL the first worker seen inside an ingest step (started, not ended).

    Returns (worker name, partition/step it was running), or None if none was seen in time.
    """
    by_pid = {proc.pid: name for name, proc in cluster.workers.items() if proc.poll() is None}
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and not stop.is_set():
        open_steps: dict[tuple[int, str, str], int] = {}
        for run in _ingest_runs(instance):
            for entry in instance.all_logs(run.run_id, of_type=_STEP_EVENTS):
                event = entry.dagster_event
                where = (event.pid, run.tags["dagster/partition"], event.step_key)
                started = event.event_type == dg.DagsterEventType.STEP_START
                open_steps[where] = open_steps.get(where, 0) + (1 if started else -1)
        for (pid, partition, step), n in open_steps.items():
            if n > 0 and pid in by_pid:
                cluster.workers[by_pid[pid]].kill()
                cluster.workers[by_pid[pid]].wait(timeout=30)
                return by_pid[pid], f"{partition}/{step}"
        time.sleep(0.05)
    return None


def test_worker_killed_mid_run_then_run_finishes_or_reruns_clean(cluster, sky, reference, tmp_path):
    storage = str(tmp_path / "storage")
    res = resources(storage, sky)
    options = RunOptions(
        release=RELEASE, skip_training=True, executor="dask", dask_address=cluster.address
    )
    with _instance(tmp_path) as instance:
        runner, outcome = _run_in_thread(options, res, instance)
        stop = threading.Event()
        try:
            killed = _kill_a_worker_inside_a_step(cluster, instance, stop)
        finally:
            stop.set()
            runner.join(timeout=240)
        assert not runner.is_alive(), "the run did not end after a worker was killed"
        assert killed is not None, "no worker was seen inside an ingest step to kill"
        worker, step = killed
        assert cluster.workers[worker].poll() is not None
        runs = _ingest_runs(instance)
        # Nothing is left STARTED: each run finished or was marked failed.
        assert {r.status for r in runs} <= {
            dg.DagsterRunStatus.SUCCESS,
            dg.DagsterRunStatus.FAILURE,
        }
        if "error" in outcome:
            failed = [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
            assert failed
            for r in failed:
                assert r.tags["dagster/partition"] in str(outcome["error"])
            print(f"killed {worker} in {step}; the run failed cleanly: {outcome['error']}")
            run_all(options, res, instance)  # the same command again, on the surviving worker
        else:
            print(f"killed {worker} in {step}; the run finished on the surviving worker")
        for key in ("spectra", "imaging_sources", "crossmatch", "cutouts", "pairs"):
            done = instance.get_materialized_partitions(dg.AssetKey(key))
            assert done == {f"{RELEASE}-1702", f"{RELEASE}-1703"}, key
    assert _pairs_files(storage) == reference
