"""Every Dagster definition loads (never skipped), with the graph, groups and config we expect."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from pipelines.definitions import defs

REPO = Path(__file__).resolve().parents[1]
EXPECTED_GROUPS = {
    "release_catalog": "catalog",
    "spectra": "ingest",
    "imaging_sources": "ingest",
    "crossmatch": "ingest",
    "cutouts": "ingest",
    "pairs": "ingest",
    "hf_dataset": "publish",
    "hats_catalogs": "publish",
    "contrastive_model": "training",
    "embeddings": "training",
    "evaluation": "evaluation",
}


def test_all_definitions_load_with_groups_and_descriptions():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    nodes = {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}
    assert set(nodes) == set(EXPECTED_GROUPS)
    for name, group in EXPECTED_GROUPS.items():
        assert nodes[name].group_name == group, name
        assert nodes[name].description and len(nodes[name].description) > 30, name
    assert {j.name for j in defs.jobs} >= {"catalog_job", "ingest_job", "publish_job", "train_job"}
    assert [s.name for s in defs.sensors] == ["new_release_sensor"]
    assert {s.name for s in defs.schedules} == {"daily_release_recheck", "weekly_retrain"}


def test_lineage_follows_the_architecture():
    graph = defs.resolve_asset_graph()

    def parents(name: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}

    assert parents("crossmatch") == {"spectra", "imaging_sources"}
    assert parents("cutouts") == {"crossmatch"}
    assert "cutouts" in parents("pairs") and "spectra" in parents("pairs")
    assert parents("hf_dataset") == {"pairs"}
    assert parents("contrastive_model") == {"hf_dataset"}
    assert parents("embeddings") == {"contrastive_model", "pairs"}
    assert parents("evaluation") == {"embeddings"}
    assert parents("hats_catalogs") == {"pairs", "embeddings"}
    checks = {k.name for k in graph.asset_check_keys if k.asset_key == dg.AssetKey("pairs")}
    assert checks == {
        "targetid_unique",
        "image_valid",
        "flux_finite_where_ivar",
        "redshift_in_selection",
        "rows_equal_matches",
    }


def test_dagster_cli_validates_the_code_location(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(dagster), "definitions", "validate"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
