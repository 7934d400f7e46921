"""The Dagster graph on the tiny sample sky: catalogue -> pairs -> Hugging Face dataset."""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import SkyCoord

from astroclip_core.samplesky.service import truth_path
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.schemas import PAIRS_SCHEMA, decode_blob
from astroclip_core.tables.splits import split_of
from pipelines import ingest
from pipelines.runner import RunOptions, _materialize, run_all
from tests.pipeline_support import make_tiny_sky, read_pairs_folder, resources


@pytest.fixture(scope="module")
def etl(tmp_path_factory):
    """One ETL run of release edr on the tiny sky, recorded in a real (SQLite) instance."""
    base = tmp_path_factory.mktemp("etl")
    sky = make_tiny_sky(base / "sky", ["edr"])
    storage = str(base / "storage")
    res = resources(storage, sky)
    (base / "dagster_home").mkdir()
    with dg.DagsterInstance.local_temp(str(base / "dagster_home")) as instance:
        summary = run_all(RunOptions(release="edr", skip_training=True), res, instance)
        yield {
            "instance": instance,
            "layout": StorageLayout(storage),
            "sky": sky,
            "summary": summary,
            "resources": res,
        }


def _latest_metadata(instance: dg.DagsterInstance, key: str, partition: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition]), limit=1
    ).records
    assert records, f"{key} {partition} was never materialized"
    assert event is not None
    return records[0].asset_materialization.metadata


def test_partitions_registered_from_catalogue(etl):
    instance = etl["instance"]
    assert instance.get_dynamic_partitions("releases") == ["edr"]
    assert etl["summary"].partitions == ["edr-1703"]
    md = _latest_metadata(instance, "release_catalog", "edr")
    assert md["n_selected"].value > 0
    cuts = md["selection_cuts"].value
    for cut in ("spectype", "zwarn", "deltachi2", "objtype", "fiberstatus", "primary"):
        assert cut in cut.lower() and cut in cuts.lower()


def test_pairs_checks_passed_and_metadata(etl):
    instance = etl["instance"]
    checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("pairs"), name) for name in ingest.PAIRS_CHECKS]
    )
    assert len(checks) == len(ingest.PAIRS_CHECKS)
    for key, record in checks.items():
        evaluation = record.event.dagster_event.event_specific_data
        assert evaluation.passed, f"{key.name}: {evaluation.metadata}"
    md = _latest_metadata(instance, "crossmatch", "edr-1703")
    assert md["matched"].value > 0 and "separation_histogram" in md
    assert md["position_id_agreement_rate"].value > 0.95
    cutouts_md = _latest_metadata(instance, "cutouts", "edr-1703")
    # auto on a sparse sky: the cost rule keeps the cutout service, and says why
    assert cutouts_md["imaging_requested"].value == "auto"
    assert cutouts_md["imaging"].value == "service"
    assert (
        cutouts_md["imaging_service_s_estimate"].value
        < cutouts_md["imaging_bricks_s_estimate"].value
    )
    pairs_md = _latest_metadata(instance, "pairs", "edr-1703")
    assert pairs_md["size_bytes"].value > 0 and "sample_pairs" in pairs_md and "schema" in pairs_md


def test_match_completeness_and_purity_against_truth(etl):
    layout, sky = etl["layout"], etl["sky"]
    pairs = read_pairs_folder(layout.pairs_dir("edr"))
    truth = pq.read_table(truth_path(sky, "edr"))
    truth = truth.filter(
        pc.and_(truth.column("is_clean_galaxy"), pc.is_valid(truth.column("objid")))
    )
    t = {
        r["targetid"]: r
        for r in truth.select(
            ["targetid", "target_ra", "target_dec", "ls_ra", "ls_dec", "brickid", "objid"]
        ).to_pylist()
    }
    sep = (
        SkyCoord(
            [r["target_ra"] for r in t.values()] * u.deg,
            [r["target_dec"] for r in t.values()] * u.deg,
        )
        .separation(
            SkyCoord(
                [r["ls_ra"] for r in t.values()] * u.deg, [r["ls_dec"] for r in t.values()] * u.deg
            )
        )
        .arcsec
    )
    true_pairs = {tid for tid, s in zip(t, sep, strict=True) if s <= 1.0}
    found = {
        r["targetid"]: (r["brickid"], r["objid"])
        for r in pairs.select(["targetid", "brickid", "objid"]).to_pylist()
    }
    correct = {
        tid
        for tid, key in found.items()
        if tid in t and key == (t[tid]["brickid"], t[tid]["objid"])
    }
    completeness = len(correct & true_pairs) / len(true_pairs)
    purity = len(correct) / len(found)
    assert len(true_pairs) > 30
    assert completeness >= 0.99, completeness
    assert purity >= 0.99, purity


def test_pairs_readable_by_polars_duckdb_pyarrow(etl):
    folder = etl["layout"].pairs_dir("edr")
    arrow = read_pairs_folder(folder)
    assert arrow.num_rows > 0
    assert decode_blob("image", arrow.column("image")).shape[1:] == (3, 152, 152)
    lazy = pl.scan_parquet(f"{folder}/**/*.parquet", hive_partitioning=True)
    df = lazy.select("targetid", "healpix", "z").collect()
    assert sorted(df["targetid"].to_list()) == arrow.column("targetid").to_pylist()
    assert set(df["healpix"].to_list()) == {1703}
    n, width = duckdb.sql(
        f"SELECT count(*), min(octet_length(image)) FROM read_parquet('{folder}/*/*.parquet', "
        "hive_partitioning = true)"
    ).fetchall()[0]
    assert n == arrow.num_rows and width == 3 * 152 * 152 * 4
    assert (
        pq.read_schema(etl["layout"].pairs_file("edr", 1703)).field("flux").type
        == PAIRS_SCHEMA.field("flux").type
    )


def test_hf_dataset_loads_offline_and_equals_pairs(etl, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    layout = etl["layout"]
    pairs = read_pairs_folder(layout.pairs_dir("edr"))
    ds = datasets.load_dataset(layout.hf_dir("edr"))
    got = sorted(list(ds["train"]["targetid"]) + list(ds["test"]["targetid"]))
    assert got == pairs.column("targetid").to_pylist()
    expect_split = dict(
        zip(
            pairs.column("targetid").to_pylist(),
            split_of(pairs.column("targetid").to_numpy()),
            strict=True,
        )
    )
    assert all(expect_split[t] == "test" for t in list(ds["test"]["targetid"]))
    row = ds["train"].with_format("numpy")[0]
    i = pairs.column("targetid").to_pylist().index(int(row["targetid"]))
    np.testing.assert_array_equal(row["image"], decode_blob("image", pairs.column("image"))[i])
    np.testing.assert_array_equal(row["flux"], decode_blob("flux", pairs.column("flux"))[i])


def test_rematerializing_pairs_replaces_the_file(etl):
    layout = etl["layout"]
    path = layout.pairs_file("edr", 1703)
    before = Path(path).read_bytes()
    _materialize(etl["instance"], [ingest.pairs], "edr-1703", etl["resources"])
    files = list(Path(layout.pairs_dir("edr")).rglob("*"))
    assert [f.name for f in files if f.is_file()] == ["part-0.parquet"]
    assert Path(path).read_bytes() == before


def test_hf_dataset_asset_pushes_without_leaking_the_token(etl, monkeypatch, capsys):
    import secrets

    import huggingface_hub
    from fake_hub import FakeHub
    from huggingface_hub.utils import _detect_agent

    from pipelines import publish

    token = f"hf_{secrets.token_hex(16)}"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(_detect_agent, "_registry", _detect_agent._EMPTY_REGISTRY)
    instance = etl["instance"]
    with FakeHub(token) as hub:
        monkeypatch.setenv("HF_REPO_ID", "astroclip/pairs-edr")
        monkeypatch.setenv("HF_TOKEN", token)
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        _materialize(instance, [publish.hf_dataset], "edr", etl["resources"])
        assert set(hub.repos["astroclip/pairs-edr"]) >= {"README.md"}
        assert {r.authorization for r in hub.requests} == {f"Bearer {token}"}
    md = _latest_metadata(instance, "hf_dataset", "edr")
    assert md["pushed"].value is True
    run_id = instance.get_runs(limit=1)[0].run_id
    logs = "\n".join(str(e) for e in instance.all_logs(run_id))
    assert "hf_dataset" in logs and token not in logs
    assert token not in str(md) and token not in capsys.readouterr().out


def test_learning_stages_write_model_embeddings_and_report(etl):
    """contrastive_model -> embeddings -> evaluation on the tiny sky (a few steps, CPU)."""
    import json

    from pipelines import evaluation, training

    instance, res, layout = etl["instance"], etl["resources"], etl["layout"]
    config = {
        "ops": {
            "contrastive_model": {
                "config": {"steps": 6, "batch_size": 16, "device": "cpu", "fresh": True}
            }
        }
    }
    _materialize(instance, [training.contrastive_model], "edr", res, config)
    md = _latest_metadata(instance, "contrastive_model", "edr")
    assert md["params_total"].value > 0 and md["device"].value == "cpu"
    assert "loss_curve" in md and md["steps"].value == 6
    _materialize(instance, [training.embeddings], "edr-1703", res)
    _materialize(instance, [evaluation.evaluation], "edr", res)

    folder = layout.embeddings_dir("edr", "tiny-v1")
    pairs = read_pairs_folder(layout.pairs_dir("edr"))
    arrow = read_pairs_folder(folder)
    assert arrow.column("targetid").to_pylist() == pairs.column("targetid").to_pylist()
    dim = arrow.schema.field("image_embedding").type.list_size
    vectors = np.stack(arrow.column("image_embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    df = pl.scan_parquet(f"{folder}/**/*.parquet", hive_partitioning=True).collect()
    assert df.height == arrow.num_rows and df["spectrum_embedding"].dtype.size == dim
    n, d = duckdb.sql(
        f"SELECT count(*), max(len(image_embedding)) FROM read_parquet('{folder}/*/*.parquet', "
        "hive_partitioning = true)"
    ).fetchall()[0]
    assert (n, d) == (arrow.num_rows, dim)

    report = json.loads(Path(layout.report_dir("edr", "tiny-v1"), "evaluation.json").read_text())
    for key in (
        "n_train",
        "n_test",
        "redshift.image.r2",
        "redshift.spectrum.r2",
        "redshift.photometry.r2",
        "redshift.image_to_spectrum.r2",
        "redshift.image.sigma_nmad",
        "redshift.image.outlier_fraction",
        "log_mstar.image.r2",
        "log_ssfr.spectrum.r2",
        "metallicity.photometry.r2",
        "retrieval.image_to_spectrum.recall_at_1",
        "retrieval.spectrum_to_image.median_rank",
    ):
        assert key in report, key
    assert report["n_train"] + report["n_test"] == pairs.num_rows
    eval_md = _latest_metadata(instance, "evaluation", "edr")
    assert any(k.startswith("pca") for k in eval_md)
    assert "redshift.supervised_cnn.r2" in report and "redshift.photometry_mlp.r2" in report
    assert (
        "| AstroCLIP paper | image | k-NN, k = 64 | 0.79 | 0.47 |"
        in eval_md["paper_comparison"].value
    )
