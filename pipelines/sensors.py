"""New data releases: a sensor that polls the release index, and daily/weekly schedules.

The sensor does three things on each tick, each guarded by a run key so nothing runs twice:
1. a release folder that is not yet a ``releases`` partition is added, and its catalogue run
   requested (that run registers the release's sky partitions);
2. every sky partition whose ``pairs`` were never materialized gets an ingest run;
3. a release whose partitions all have pairs but no ``hf_dataset`` gets a publish run.
Training is never triggered by new data: it runs when asked or on ``retrain_schedule``.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from astroclip_core.sky.healpix import parse_partition_key
from astroclip_core.sources.releases_index import list_releases
from pipelines.jobs import catalog_job, ingest_job, publish_job, train_job
from pipelines.partitions import releases_partitions, sky_partitions
from pipelines.resources import DesiSourceResource, SampleSkyResource


def _released_names(desi: DesiSourceResource, sample_sky: SampleSkyResource) -> list[str]:
    if desi.root_url:
        return [r.name for r in list_releases(desi.root_url)]
    with sample_sky.serving(generate_missing=False) as server:
        return [r.name for r in list_releases(server.desi_root_url)]


def plan_release_runs(instance: dg.DagsterInstance, released: list[str]) -> dg.SensorResult:
    """The partitions to add and runs to request, given the releases the source lists."""
    known = set(instance.get_dynamic_partitions(releases_partitions.name))
    new_releases = sorted(set(released) - known)
    requests = [
        dg.RunRequest(run_key=f"catalog-{r}", partition_key=r, job_name=catalog_job.name)
        for r in new_releases
    ]
    pixel_keys = instance.get_dynamic_partitions(sky_partitions.name)
    done = instance.get_materialized_partitions(dg.AssetKey("pairs"))
    todo = [k for k in pixel_keys if k not in done]
    requests += [
        dg.RunRequest(run_key=f"ingest-{k}", partition_key=k, job_name=ingest_job.name)
        for k in todo
    ]
    published = instance.get_materialized_partitions(dg.AssetKey("hf_dataset"))
    for release in sorted(known):
        keys = [k for k in pixel_keys if parse_partition_key(k)[0] == release]
        if keys and release not in published and all(k in done for k in keys):
            requests.append(
                dg.RunRequest(
                    run_key=f"publish-{release}", partition_key=release, job_name=publish_job.name
                )
            )
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
    released = _released_names(desi, sample_sky)
    context.log.info(f"release index lists {released}")
    return plan_release_runs(context.instance, released)


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
