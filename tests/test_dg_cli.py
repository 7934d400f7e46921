"""`dg`, Dagster's current CLI, works from the repository root ([tool.dg] in pyproject.toml).

`dg check defs` loads the code location and `dg list defs --json` lists what it holds; the list
must be the same graph that `pipelines.definitions` builds in this process (so `dg` loads the
module `dagster dev` loads, not some other one). `dg dev` starts the same location; the UI test
(tests/test_ui_browser.py) and the README cover it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipelines.definitions import defs

REPO = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).with_name("dg")


def _dg(args: list[str], dagster_home: Path) -> subprocess.CompletedProcess:
    """Run `.venv/bin/dg ARGS` from the repository root with a throwaway DAGSTER_HOME."""
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "NO_COLOR": "1"}
    return subprocess.run(
        [str(DG), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_dg_check_defs_loads_the_location(tmp_path):
    proc = _dg(["check", "defs"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All definitions loaded successfully" in proc.stdout + proc.stderr
    # pyproject suppresses only the venv-mismatch warning; nothing else should be warned about
    assert "warning" not in proc.stderr.lower(), proc.stderr


def test_dg_list_defs_matches_the_code_location(tmp_path):
    proc = _dg(["list", "defs", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = json.loads(proc.stdout)

    graph = defs.resolve_asset_graph()
    expected_assets = {
        key.to_user_string(): (
            graph.get(key).group_name,
            sorted(k.to_user_string() for k in graph.get(key).parent_keys),
        )
        for key in graph.get_all_asset_keys()
    }
    got_assets = {
        a["asset_key"]: (a["group_name"], sorted(a["dependency_keys"])) for a in listed["assets"]
    }
    assert got_assets == expected_assets

    expected_checks = {f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys}
    assert {c["key"] for c in listed["asset_checks"]} == expected_checks
    assert {j["name"] for j in listed["jobs"]} == {j.name for j in defs.jobs}
    assert {s["name"] for s in listed["sensors"]} == {s.name for s in defs.sensors}
    assert {s["name"] for s in listed["schedules"]} == {s.name for s in defs.schedules}
    assert {r["name"] for r in listed["resources"]} == set(defs.resources)
