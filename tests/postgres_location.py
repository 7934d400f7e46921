"""The code location that tests/test_deploy_postgres.py runs under a real daemon.

It holds the project's ingest assets over a tiny sample sky, and a sensor that asks for
``INGEST_RUNS`` partitioned ingest runs at once. The daemon's code server and every run process
load this file; the test passes the data root and the sky's folder in the environment. Steps run
inside their run's process (``in_process_executor``), so one run is one process, as under the
default run launcher.
"""

import dagster as dg

from pipelines import ingest
from pipelines.partitions import sky_partitions
from pipelines.resources import (
    DesiSourceResource,
    LegacySurveySourceResource,
    SampleSkyResource,
    StorageResource,
)

INGEST_RUNS = 6
SKY_ENV = "ASTROCLIP_TEST_SKY"

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("ingest"),
    executor_def=dg.in_process_executor,
)


@dg.sensor(job=ingest_job, default_status=dg.DefaultSensorStatus.RUNNING)
def ingest_every_partition(context: dg.SensorEvaluationContext) -> list[dg.RunRequest]:
    """``INGEST_RUNS`` ingest runs over the registered partitions, each asked for once.

    The tiny sky has 5 partitions over its three releases, so the sixth run ingests the first
    partition again, as a re-execution started while the first run is going would.
    """
    keys = sorted(context.instance.get_dynamic_partitions(sky_partitions.name))
    wanted = (keys * INGEST_RUNS)[:INGEST_RUNS]
    return [
        dg.RunRequest(run_key=f"ingest-{i}-{key}", partition_key=key)
        for i, key in enumerate(wanted)
    ]


defs = dg.Definitions(
    assets=dg.load_assets_from_modules([ingest]),
    jobs=[ingest_job],
    sensors=[ingest_every_partition],
    resources={
        "storage": StorageResource(root=dg.EnvVar("ASTROCLIP_STORAGE")),
        "sample_sky": SampleSkyResource(
            root=dg.EnvVar(SKY_ENV), size="tiny", releases=["edr", "dr1", "dr2"]
        ),
        "desi": DesiSourceResource(),
        "legacysurvey": LegacySurveySourceResource(max_concurrent_requests=4),
    },
)
