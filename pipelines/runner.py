"""The main job: materialize the whole graph for one release, recording runs in DAGSTER_HOME.

``astroclip run`` calls :func:`run_all`. Each stage is one ``dagster.materialize`` call on the
instance, per partition, so ``dagster dev`` afterwards shows every asset materialized with its
metadata. Steps run in this process, one after another (the machine this targets has 2 cores).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import dagster as dg

from astroclip_core.processes import host_id, is_dead
from astroclip_core.sky.healpix import parse_partition_key
from astroclip_core.storage import REPO_ROOT
from pipelines import catalog, evaluation, ingest, publish, training
from pipelines.definitions import defs
from pipelines.partitions import register_release, sky_partitions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """What the main job materializes and how it trains (the training asset's config)."""

    release: str = "edr"
    training: training.TrainingConfig = field(default_factory=training.TrainingConfig)
    skip_training: bool = False


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
    stage(
        "ingest",
        [ingest.spectra, ingest.imaging_sources, ingest.crossmatch, ingest.cutouts, ingest.pairs],
        keys,
    )
    stage("publish", [publish.hf_dataset], [release])
    if options.skip_training:
        return summary
    # The same command after a kill resumes the interrupted training; TrainingConfig.fresh
    # (``--fresh``) restarts it. The published model is replaced only when training finishes.
    train_config = {"ops": {"contrastive_model": {"config": options.training.model_dump()}}}
    stage("train", [training.contrastive_model], [release], train_config)
    stage("embed", [training.embeddings], keys)
    stage("evaluate", [evaluation.evaluation], [release])
    return summary
