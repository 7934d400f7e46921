"""New data releases: a sensor that polls the release index, and daily/weekly schedules.

The sensor does three things on each tick, each guarded by a run key so nothing runs twice:
1. a release the source publishes (see :func:`astroclip_core.releases.discover_releases`)
   that is not yet a ``releases`` partition is added; it, and any registered release whose
   catalogue was never materialized, gets a catalogue run (that run registers its sky
   partitions);
2. every sky partition whose ``pairs`` were never materialized gets an ingest run;
3. a release whose partitions all have pairs but no ``hf_dataset`` gets a publish run.
Every run it requests carries the DESI resource's settings as run config (root, S3 endpoint,
retries, and the release's production and zcatalog folder as the sensor read them, the
production being the one ``specprod`` pins, if it does).
Training is never triggered by new data: it runs when asked or on ``retrain_schedule``.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from astroclip_core.releases import Release
from astroclip_core.sky.healpix import parse_partition_key
from astroclip_core.sources.releases_index import INDEX_POLICY
from pipelines.jobs import catalog_job, ingest_job, publish_job, train_job
from pipelines.partitions import releases_partitions, sky_partitions
from pipelines.resources import DesiSourceResource, SampleSkyResource


def _request(
    job_name: str, key: str, release: Release | None, desi: DesiSourceResource
) -> dg.RunRequest:
    """A run of ``job_name`` on partition ``key``, keyed so the sensor requests it only once."""
    config = desi.run_config(release) if release is not None else {}
    stage = job_name.removesuffix("_job")
    return dg.RunRequest(
        run_key=f"{stage}-{key}", partition_key=key, job_name=job_name, run_config=config
    )


def plan_release_runs(
    instance: dg.DagsterInstance, released: list[Release], desi: DesiSourceResource
) -> dg.SensorResult:
    """The partitions to add and runs to request, given the releases the source publishes."""
    by_name = {r.name: r for r in released}
    known = set(instance.get_dynamic_partitions(releases_partitions.name))
    new_releases = sorted(set(by_name) - known)
    cataloged = instance.get_materialized_partitions(dg.AssetKey("release_catalog"))
    uncataloged = sorted(r for r in known & set(by_name) if r not in cataloged)
    requests = [
        _request(catalog_job.name, r, by_name[r], desi) for r in sorted(new_releases + uncataloged)
    ]
    pixel_keys = instance.get_dynamic_partitions(sky_partitions.name)
    done = instance.get_materialized_partitions(dg.AssetKey("pairs"))
    for key in pixel_keys:
        if key not in done:
            release = by_name.get(parse_partition_key(key)[0])
            requests.append(_request(ingest_job.name, key, release, desi))
    published = instance.get_materialized_partitions(dg.AssetKey("hf_dataset"))
    for release in sorted(known):
        keys = [k for k in pixel_keys if parse_partition_key(k)[0] == release]
        if keys and release not in published and all(k in done for k in keys):
            requests.append(_request(publish_job.name, release, by_name.get(release), desi))
    adds = [releases_partitions.build_add_request(new_releases)] if new_releases else []
    return dg.SensorResult(run_requests=requests, dynamic_partitions_requests=adds)


@dg.sensor(
    jobs=[catalog_job, ingest_job, publish_job],
    minimum_interval_seconds=600,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Polls the DESI release index (or the sample sky's) and ingests new releases.",
)
def new_release_sensor(
    context: dg.SensorEvaluationContext, desi: DesiSourceResource, sample_sky: SampleSkyResource
) -> dg.SensorResult:
    # short timeouts: a sensor tick must finish well inside its 60 s budget
    released = desi.published_releases(sample_sky, generate_missing=False, policy=INDEX_POLICY)
    context.log.info(f"release index lists {[f'{r.name}/{r.specprod}' for r in released]}")
    return plan_release_runs(context.instance, released, desi)


@dg.schedule(
    job=catalog_job,
    cron_schedule="0 6 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Re-reads every known release's catalogue daily; new pixels then get ingested by the sensor.",
)
def daily_release_recheck(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    day = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    return [
        dg.RunRequest(run_key=f"recheck-{r}-{day:%Y%m%d}", partition_key=r)
        for r in context.instance.get_dynamic_partitions(releases_partitions.name)
    ]


@dg.schedule(
    job=train_job,
    cron_schedule="0 3 * * 0",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Weekly retraining of every published release's model (off by default).",
)
def weekly_retrain(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    day = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    published = context.instance.get_materialized_partitions(dg.AssetKey("hf_dataset"))
    return [
        dg.RunRequest(run_key=f"retrain-{r}-{day:%Y%m%d}", partition_key=r)
        for r in sorted(published)
    ]
