"""New data releases: the sensor discovers a release that no code names (the sample sky's
``dr2``, production ``loa``), requests only its partitions with the DESI resource's settings in
every run's config, and ingesting it leaves the old release's files byte-identical."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg

from astroclip_core.releases import Release
from astroclip_core.samplesky.generate import desi_root
from astroclip_core.samplesky.service import ensure_published
from astroclip_core.sky.healpix import parse_partition_key
from astroclip_core.sources import layout
from pipelines.definitions import defs
from pipelines.jobs import ALL_JOBS
from pipelines.resources import DesiSourceResource
from pipelines.runner import RunOptions, run_all
from pipelines.sensors import new_release_sensor
from tests.pipeline_support import TINY, make_tiny_sky, resources

# Never contacted (the sample sky is served over HTTP): it only has to reach every run.
S3_ENDPOINT = "http://127.0.0.1:9/"


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _evaluate(instance: dg.DagsterInstance, res: dict) -> dg.SensorResult:
    with dg.build_sensor_context(
        instance=instance, resources={"desi": res["desi"], "sample_sky": res["sample_sky"]}
    ) as context:
        return new_release_sensor(context)


def _launch(
    instance: dg.DagsterInstance, code: dg.Definitions, tick: dg.SensorResult
) -> list[dg.DagsterRun]:
    """Apply a tick as the daemon does: add its partitions, then run each request as asked."""
    for add in tick.dynamic_partitions_requests:
        instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys))
    runs = []
    for request in tick.run_requests:
        result = code.resolve_job_def(request.job_name).execute_in_process(
            run_config=request.run_config, partition_key=request.partition_key, instance=instance
        )
        assert result.success, request
        runs.append(instance.get_run_by_id(result.run_id))
    return runs


def _desi_config(run: dg.DagsterRun) -> dict:
    return run.run_config["resources"]["desi"]["config"]


def test_a_release_no_code_names_is_discovered_and_ingested_alone(tmp_path):
    sky = make_tiny_sky(tmp_path / "sky", ["edr"])
    storage = tmp_path / "storage"
    res = resources(str(storage), sky, s3_endpoint_url=S3_ENDPOINT)
    code = dg.Definitions(assets=defs.assets, jobs=ALL_JOBS, resources=res)
    (tmp_path / "home").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "home")) as instance:
        run_all(RunOptions(release="edr", skip_training=True), res, instance)
        edr_files = {sub: _snapshot(storage / sub / "edr") for sub in ("catalog", "pairs", "hf")}
        quiet = _evaluate(instance, res)
        assert quiet.run_requests == [] and quiet.dynamic_partitions_requests == []

        ensure_published(sky, ["dr2"], size=TINY)  # the archive publishes a new release
        first = _evaluate(instance, res)
        assert [(r.job_name, r.partition_key, r.run_key) for r in first.run_requests] == [
            ("catalog_job", "dr2", "catalog-dr2")
        ]
        assert [list(r.partition_keys) for r in first.dynamic_partitions_requests] == [["dr2"]]
        # a specprod override on the resource, with the zcatalog folder its listing shows, is
        # what the requested run reads
        rerun = Release("dr2", "loa_rerun", "zcatalog/v2")
        rerun_zcatalog = desi_root(sky) / layout.zcatalog_path(rerun)
        rerun_zcatalog.parent.mkdir(parents=True)
        rerun_zcatalog.write_bytes(b"x")
        pinned = DesiSourceResource(release="dr2", specprod="loa_rerun", retry=res["desi"].retry)
        (request,) = _evaluate(instance, {**res, "desi": pinned}).run_requests
        pinned_config = request.run_config["resources"]["desi"]["config"]
        assert (pinned_config["specprod"], pinned_config["zcatalog_dir"]) == (
            "loa_rerun",
            "zcatalog/v2",
        )
        shutil.rmtree(desi_root(sky) / layout.specprod_root(rerun))

        (catalog_run,) = _launch(instance, code, first)
        ingest_tick = _evaluate(instance, res)
        keys = sorted(r.partition_key for r in ingest_tick.run_requests)
        assert all(r.job_name == "ingest_job" for r in ingest_tick.run_requests)
        assert keys == ["dr2-1702", "dr2-1703"]  # tiny dr2 covers pixels 1702 and 1703
        assert all(r.run_key == f"ingest-{r.partition_key}" for r in ingest_tick.run_requests)
        ingest_runs = _launch(instance, code, ingest_tick)

        publish_tick = _evaluate(instance, res)
        assert [(r.job_name, r.partition_key) for r in publish_tick.run_requests] == [
            ("publish_job", "dr2")
        ]
        (publish_run,) = _launch(instance, code, publish_tick)
        for run in (catalog_run, *ingest_runs, publish_run):
            config = _desi_config(run)
            assert (config["release"], config["specprod"]) == ("dr2", "loa"), run.run_id
            assert config["zcatalog_dir"] == "zcatalog/v1", run.run_id
            assert config["s3_endpoint_url"] == S3_ENDPOINT
            assert config["retry"] == res["desi"].retry.model_dump()
        assert all(parse_partition_key(k)[0] == "dr2" for k in keys)
        assert _evaluate(instance, res).run_requests == []
        assert {
            sub: _snapshot(storage / sub / "edr") for sub in ("catalog", "pairs", "hf")
        } == edr_files
        assert (storage / "pairs" / "dr2" / "healpix=1702" / "part-0.parquet").exists()
        assert "production `loa`" in (storage / "hf" / "dr2" / "README.md").read_text()
