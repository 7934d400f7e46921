"""Run pipeline stages of the tiny sample sky in a process of their own, so a test can kill it.

    python -m tests.stage_process STORAGE SKY DAGSTER_HOME EVENTS STAGE [STAGE ...] [--hold]

Each stage is one ``dagster.materialize`` per partition on the instance in ``DAGSTER_HOME``
(the same calls ``astroclip run`` makes). Around each stage a line ``start <stage>`` and
``done <stage> <seconds>`` is appended to the file ``EVENTS`` (flushed at once), so that the
test can tell when a stage began. ``--hold`` keeps the process alive after the last stage,
so that a kill always finds it running.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import dagster as dg

from astroclip_core.sky.healpix import parse_partition_key
from pipelines import catalog, ingest, publish, training
from pipelines.definitions import defs
from pipelines.partitions import releases_partitions, sky_partitions
from tests.pipeline_support import resources

RELEASE = "edr"
TRAIN_STEPS = 8
STAGES: dict[str, tuple[list, bool]] = {  # stage -> (assets, per sky partition?)
    "catalog": ([catalog.release_catalog], False),
    "ingest": (
        [ingest.spectra, ingest.imaging_sources, ingest.crossmatch, ingest.cutouts, ingest.pairs],
        True,
    ),
    "publish": ([publish.hf_dataset], False),
    "train": ([training.contrastive_model], False),
    "embed": ([training.embeddings], True),
}
RUN_CONFIG = {
    "train": {
        "ops": {
            "contrastive_model": {
                "config": {"steps": TRAIN_STEPS, "batch_size": 16, "device": "cpu"}
            }
        }
    }
}


def _event(events: Path, line: str) -> None:
    with events.open("a") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def run_stage(instance: dg.DagsterInstance, stage: str, res: dict) -> None:
    """Materialize one stage's assets for each of its partitions, failing loudly."""
    assets, per_pixel = STAGES[stage]
    keys = [RELEASE]
    if per_pixel:
        keys = sorted(
            k
            for k in instance.get_dynamic_partitions(sky_partitions.name)
            if parse_partition_key(k)[0] == RELEASE
        )
    for key in keys:
        dg.materialize(
            list(defs.assets or []),
            selection=assets,
            partition_key=key,
            instance=instance,
            resources=res,
            run_config=RUN_CONFIG.get(stage, {}),
            raise_on_error=True,
        )


def main(argv: list[str] | None = None) -> int:
    """Run the stages named on the command line, in order (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("storage")
    parser.add_argument("sky")
    parser.add_argument("dagster_home")
    parser.add_argument("events", type=Path)
    parser.add_argument("stages", nargs="+", choices=sorted(STAGES))
    parser.add_argument("--hold", action="store_true", help="stay alive after the last stage")
    args = parser.parse_args(argv)
    res = resources(args.storage, Path(args.sky))
    Path(args.dagster_home).mkdir(parents=True, exist_ok=True)
    with dg.DagsterInstance.local_temp(args.dagster_home) as instance:
        if not instance.has_dynamic_partition(releases_partitions.name, RELEASE):
            instance.add_dynamic_partitions(releases_partitions.name, [RELEASE])
        for stage in args.stages:
            _event(args.events, f"start {stage}")
            t0 = time.perf_counter()
            run_stage(instance, stage, res)
            _event(args.events, f"done {stage} {time.perf_counter() - t0:.3f}")
    while args.hold:
        time.sleep(60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
