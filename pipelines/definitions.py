"""The Dagster code location: every asset, check, job, sensor, schedule and resource."""

import dagster as dg

from pipelines import catalog, evaluation, ingest, publish, training
from pipelines.jobs import ALL_JOBS
from pipelines.resources import default_resources
from pipelines.sensors import daily_release_recheck, new_release_sensor, weekly_retrain

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([catalog, ingest, publish, training, evaluation]),
    jobs=ALL_JOBS,
    sensors=[new_release_sensor],
    schedules=[daily_release_recheck, weekly_retrain],
    resources={
        **default_resources(),
        "hub": publish.HubResource(),
    },
)
