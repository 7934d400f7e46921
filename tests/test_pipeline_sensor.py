"""New data releases: the sensor requests only the new release's partitions, and ingesting
them leaves the old release's files byte-identical."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from astroclip_core.samplesky.service import ensure_published
from astroclip_core.sky.healpix import parse_partition_key
from pipelines import catalog, ingest
from pipelines.runner import RunOptions, _materialize, run_all
from pipelines.sensors import new_release_sensor
from tests.pipeline_support import TINY, make_tiny_sky, resources

INGEST = [ingest.spectra, ingest.imaging_sources, ingest.crossmatch, ingest.cutouts, ingest.pairs]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _evaluate(instance: dg.DagsterInstance, res: dict) -> dg.SensorResult:
    with dg.build_sensor_context(
        instance=instance, resources={"desi": res["desi"], "sample_sky": res["sample_sky"]}
    ) as context:
        return new_release_sensor(context)


def test_new_release_is_detected_and_ingested_alone(tmp_path):
    sky = make_tiny_sky(tmp_path / "sky", ["edr"])
    storage = tmp_path / "storage"
    res = resources(str(storage), sky)
    (tmp_path / "home").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "home")) as instance:
        run_all(RunOptions(release="edr", skip_training=True), res, instance)
        edr_files = {sub: _snapshot(storage / sub / "edr") for sub in ("catalog", "pairs", "hf")}
        quiet = _evaluate(instance, res)
        assert quiet.run_requests == [] and quiet.dynamic_partitions_requests == []

        ensure_published(sky, ["dr1"], size=TINY)  # publish release 2
        first = _evaluate(instance, res)
        assert [(r.job_name, r.partition_key, r.run_key) for r in first.run_requests] == [
            ("catalog_job", "dr1", "catalog-dr1")
        ]
        assert [list(r.partition_keys) for r in first.dynamic_partitions_requests] == [["dr1"]]

        instance.add_dynamic_partitions("releases", ["dr1"])
        _materialize(instance, [catalog.release_catalog], "dr1", res)
        second = _evaluate(instance, res)
        ingest_requests = [r for r in second.run_requests if r.job_name == "ingest_job"]
        keys = sorted(r.partition_key for r in ingest_requests)
        assert keys and len(keys) == len(second.run_requests)
        assert all(parse_partition_key(k)[0] == "dr1" for k in keys), keys
        assert len(keys) == 2  # tiny dr1 covers pixels 1702 and 1703
        assert all(r.run_key == f"ingest-{r.partition_key}" for r in ingest_requests)

        for key in keys:
            _materialize(instance, INGEST, key, res)
        third = _evaluate(instance, res)
        assert [(r.job_name, r.partition_key) for r in third.run_requests] == [
            ("publish_job", "dr1")
        ]
        assert {
            sub: _snapshot(storage / sub / "edr") for sub in ("catalog", "pairs", "hf")
        } == edr_files
        assert (storage / "pairs" / "dr1" / "healpix=1702" / "part-0.parquet").exists()
