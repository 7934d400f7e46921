"""The main job: materialize the whole graph for one release, recording runs in DAGSTER_HOME.

``astroclip run`` calls :func:`run_all`. Each stage is one ``dagster.materialize`` call on the
instance, per partition, so ``dagster dev`` afterwards shows every asset materialized with its
metadata. Steps run in this process, one after another (the machine this targets has 2 cores),
except the ingest's with ``RunOptions.executor`` set to ``multiprocess`` or ``dask``: those are
runs of ``ingest_job`` (one per partition) with that executor, whose steps reconstruct the job
from this code and read their resources from the run config (:func:`resources_run_config`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat

import dagster as dg
from dagster._core.instance.ref import InstanceRef

from astroclip_core.processes import host_id, is_dead
from astroclip_core.sky.healpix import parse_partition_key
from astroclip_core.storage import REPO_ROOT
from pipelines import catalog, evaluation, ingest, publish, training
from pipelines.definitions import defs
from pipelines.executors import dask_scheduler, execution_config
from pipelines.partitions import register_release, sky_partitions
from pipelines.resources import SampleSkyResource

log = logging.getLogger(__name__)


INGEST_ASSETS = [
    ingest.spectra,
    ingest.imaging_sources,
    ingest.crossmatch,
    ingest.cutouts,
    ingest.pairs,
]


@dataclass(frozen=True)
class RunOptions:
    """What the main job materializes, where the ingest runs, and how it trains.

    ``executor`` is where the ingest steps run: ``in_process`` (this process), ``multiprocess``
    (a subprocess per step, one partition at a time) or ``dask`` (the scheduler at
    ``dask_address``, else a LocalCluster started for the stage; several partitions at once).
    Raises ValueError naming the value for an unknown executor, or an address without dask.
    """

    release: str = "edr"
    training: training.TrainingConfig = field(default_factory=training.TrainingConfig)
    skip_training: bool = False
    executor: str = "in_process"
    dask_address: str | None = None

    def __post_init__(self) -> None:
        execution_config(self.executor, self.dask_address)


@dataclass
class RunSummary:
    """Seconds spent per stage and the partitions processed."""

    partitions: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def dagster_instance() -> dg.DagsterInstance:
    """The instance in ``$DAGSTER_HOME``, which defaults to the repository's ``dagster_home/``."""
    os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / "dagster_home"))
    os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
    return dg.DagsterInstance.get()


# Tags naming the process that runs a step in-process, so a later command can tell a run
# whose process was killed (still STARTED in the instance) from one that is running.
HOST_TAG = "astroclip/host"
PID_TAG = "astroclip/pid"


def _process_tags() -> dict[str, str]:
    return {HOST_TAG: host_id(), PID_TAG: str(os.getpid())}


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every STARTING/STARTED run of ``astroclip run`` whose process has died.

    Runs started in-process (``dagster.materialize``) have no run worker that Dagster's run
    monitoring could check, so a kill -9 would leave them STARTED for ever. Each carries the
    host and pid that ran it (:data:`HOST_TAG`, :data:`PID_TAG`); a run of this host whose
    process is gone is reported failed. Runs of other hosts are left alone. Returns their ids.
    """
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED])
    )
    failed = []
    for record in records:
        tags = record.dagster_run.tags
        if HOST_TAG not in tags or PID_TAG not in tags:
            continue
        since = record.start_time or record.create_timestamp.timestamp()
        if is_dead(tags[HOST_TAG], int(tags[PID_TAG]), since):
            instance.report_run_failed(
                record.dagster_run,
                f"the process that ran it (pid {tags[PID_TAG]}) ended without finishing it",
            )
            failed.append(record.dagster_run.run_id)
    return failed


def _materialize(
    instance: dg.DagsterInstance,
    assets: list,
    partition_key: str,
    resources: dict,
    run_config: dict | None = None,
) -> None:
    all_assets = list(defs.assets or [])
    result = dg.materialize(
        all_assets,
        selection=assets,
        partition_key=partition_key,
        instance=instance,
        resources=resources,
        run_config=run_config or {},
        tags=_process_tags(),
        raise_on_error=True,
    )
    if not result.success:
        raise RuntimeError(f"materializing {assets} for {partition_key} failed")


def ingest_job_definition() -> dg.JobDefinition:
    """``ingest_job`` resolved against the code location (what a worker process reconstructs)."""
    return defs.resolve_job_def("ingest_job")


def resources_run_config(resources: Mapping[str, dg.ConfigurableResource]) -> dict:
    """Run config that carries every setting of ``resources`` into steps run elsewhere.

    Steps of a multiprocess or Dask run build their resources from the code location and the
    run config, not from this process's objects. Every field is given, because run config
    replaces a resource's whole configuration. The sample sky's folder is resolved here, since a
    worker's ``$ASTROCLIP_STORAGE`` may differ. Resources hold no secrets: those are read from
    the environment where a step runs (see ``HubResource``).
    """
    config = {}
    for key, resource in resources.items():
        fields = resource.model_dump()
        if isinstance(resource, SampleSkyResource):
            fields["root"] = resource.folder()
        if fields:
            config[key] = {"config": fields}
    return {"resources": config}


def _max_concurrent_runs(instance: dg.DagsterInstance, workers: int) -> int:
    """One run per worker, within the instance's run cap (dagster.yaml; SQLite's is small)."""
    cap = instance.get_concurrency_config().run_queue_config.max_concurrent_runs
    return max(1, min(workers, cap) if cap and cap > 0 else workers)


def _execute_partition(
    instance: dg.DagsterInstance | InstanceRef, key: str, run_config: dict
) -> str | None:
    """Execute ``ingest_job`` for partition ``key``; None, or the partition and run that failed.

    Given an instance ref, it opens the instance itself (it then runs in a process of its own).
    """
    if isinstance(instance, InstanceRef):
        with dg.DagsterInstance.from_ref(instance) as opened:
            return _execute_partition(opened, key, run_config)
    tags = {**_process_tags(), "dagster/partition": key}
    job = dg.reconstructable(ingest_job_definition)
    result = dg.execute_job(job, instance, run_config=run_config, tags=tags)
    return None if result.success else f"{key} (run {result.run_id})"


def _execute_partitions(
    instance: dg.DagsterInstance, keys: list[str], run_config: dict, concurrent: int
) -> None:
    """Execute ``ingest_job`` once per partition key, ``concurrent`` runs at a time.

    Concurrent runs are orchestrated from processes of their own: Dagster is not safe for
    several runs in threads of one process (each run's start reconfigures Python's logging,
    which deadlocks against another run's log handler). Every partition's run is attempted;
    then RuntimeError names each partition whose run failed, with its run id (the same command
    re-runs them).
    """
    concurrent = min(concurrent, len(keys))
    (executor,) = run_config["execution"]["config"]
    log.info(
        "ingest: %d partitions, %d runs at a time, %s executor", len(keys), concurrent, executor
    )
    if concurrent <= 1:
        outcomes = [_execute_partition(instance, key, run_config) for key in keys]
    else:
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=concurrent, mp_context=spawn) as pool:
            ref = instance.get_ref()
            outcomes = list(pool.map(_execute_partition, repeat(ref), keys, repeat(run_config)))
    failed = [outcome for outcome in outcomes if outcome]
    if failed:
        raise RuntimeError(
            f"ingest failed for {len(failed)} of {len(keys)} partitions: {', '.join(failed)}; "
            "see the runs in Dagster, then run the same command again"
        )


def _ingest_elsewhere(
    instance: dg.DagsterInstance, options: RunOptions, keys: list[str], resources: dict
) -> None:
    """The ingest stage as runs of ``ingest_job`` on the multiprocess or dask executor."""
    run_config = resources_run_config(resources)
    if options.executor == "multiprocess":
        run_config |= execution_config("multiprocess")
        _execute_partitions(instance, keys, run_config, concurrent=1)
        return
    with dask_scheduler(options.dask_address) as (address, workers):
        log.info("ingest on the Dask scheduler at %s (%d workers)", address, workers)
        run_config |= execution_config("dask", address)
        _execute_partitions(instance, keys, run_config, _max_concurrent_runs(instance, workers))


def run_all(
    options: RunOptions,
    resources: dict | None = None,
    instance: dg.DagsterInstance | None = None,
) -> RunSummary:
    """Materialize catalogue, ingest, dataset, model, embeddings and evaluation for a release.

    ``resources`` default to the code location's (sample sky, ``$ASTROCLIP_STORAGE``);
    ``instance`` to the one in ``$DAGSTER_HOME`` (the repository's dagster_home/ if unset).
    Raises :class:`astroclip_core.releases.ReleaseNotFoundError` before any work, registering
    nothing, when the DESI source does not publish the release.
    """
    instance = instance or dagster_instance()
    for run_id in fail_dead_runs(instance):
        log.warning("run %s was left STARTED by a killed process; marked failed", run_id)
    resources = resources if resources is not None else dict(defs.resources)
    summary = RunSummary()
    release = options.release
    # Validated against the source's listing (the sample sky generates it first) before it
    # becomes a partition: a mistyped release raises ReleaseNotFoundError and registers nothing.
    found = register_release(instance, release, resources["desi"], resources["sample_sky"])
    resources = {**resources, "desi": resources["desi"].for_release(found)}

    def stage(name: str, assets: list, keys: list[str], run_config: dict | None = None) -> None:
        t0 = time.perf_counter()
        for i, key in enumerate(keys, 1):
            log.info("%s: %s (%d/%d)", name, key, i, len(keys))
            _materialize(instance, assets, key, resources, run_config)
        summary.seconds[name] = round(time.perf_counter() - t0, 1)
        log.info("%s done in %.1f s", name, summary.seconds[name])

    stage("catalog", [catalog.release_catalog], [release])
    keys = sorted(
        k
        for k in instance.get_dynamic_partitions(sky_partitions.name)
        if parse_partition_key(k)[0] == release
    )
    summary.partitions = keys
    if options.executor == "in_process":
        stage("ingest", INGEST_ASSETS, keys)
    else:
        t0 = time.perf_counter()
        _ingest_elsewhere(instance, options, keys, resources)
        summary.seconds["ingest"] = round(time.perf_counter() - t0, 1)
    stage("publish", [publish.hf_dataset], [release])
    if options.skip_training:
        return summary
    # The same command after a kill resumes the interrupted training; TrainingConfig.fresh
    # (``--fresh``) restarts it. The published model is replaced only when training finishes.
    train_config = {"ops": {"contrastive_model": {"config": options.training.model_dump()}}}
    stage("train", [training.contrastive_model], [release], train_config)
    stage("embed", [training.embeddings], keys)
    stage("evaluate", [evaluation.evaluation], [release])
    stage("hats", [publish.hats_catalogs], [release])
    return summary
