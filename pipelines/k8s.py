"""The code location as deployed on Kubernetes: the same definitions, one pod per step.

deploy/helm-values.yaml runs this module in the user-code deployment (``dagster api grpc -m
pipelines.k8s``). The instance's ``K8sRunLauncher`` starts each run as a Kubernetes Job, and
``k8s_job_executor`` starts each step of the run as a Job of its own, from the same image, with
the run launcher's ``runK8sConfig`` and the deployment's environment. So the partitions of a
sensor's or a backfill's ingest spread over the cluster. Steps pass nothing but through the data
root, which must be shared storage (``ASTROCLIP_STORAGE=s3://...``).

Every job gets ``k8s_job_executor``, replacing the executor it has elsewhere (``ingest_job``'s
in-process / multiprocess / Dask choice is for one machine or a Dask cluster). Only this module
imports ``dagster_k8s`` (the ``k8s`` extra); ``pipelines.definitions`` runs without it.
"""

import dagster as dg
from dagster._record import copy
from dagster_k8s import k8s_job_executor

from pipelines.definitions import defs as local_defs

# Sensors and schedules name their jobs by object, so they get the same replacements.
_JOBS = {job.name: copy(job, executor_def=k8s_job_executor) for job in local_defs.jobs or []}

defs: dg.Definitions = copy(
    local_defs,
    jobs=list(_JOBS.values()),
    sensors=[
        sensor.with_updated_jobs([_JOBS[job.name] for job in sensor.jobs])
        for sensor in local_defs.sensors or []
    ],
    schedules=[
        schedule.with_updated_job(_JOBS[schedule.job.name])
        for schedule in local_defs.schedules or []
    ],
    executor=k8s_job_executor,
)
