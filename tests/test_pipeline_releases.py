"""Releases and partitions can't get stuck: a release is validated against the source before it
becomes a partition, the sample sky generates what is asked for under the data root, and
``astroclip partitions sync`` lets ``dagster asset materialize`` run in a fresh DAGSTER_HOME."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from astroclip_core.cli import main
from astroclip_core.releases import Release, ReleaseNotFoundError
from astroclip_core.samplesky.generate import desi_root
from astroclip_core.samplesky.service import is_published
from astroclip_core.sources import layout
from astroclip_core.storage import REPO_ROOT
from pipelines.partitions import register_release
from pipelines.resources import DesiSourceResource
from tests.pipeline_support import FAST_RETRY, make_tiny_sky, resources

DAGSTER = str(Path(sys.executable).with_name("dagster"))


def test_sample_sky_generates_a_release_on_request_and_refuses_unknown_ones(tmp_path):
    sky = make_tiny_sky(tmp_path / "sky", ["edr"])
    res = resources(str(tmp_path / "storage"), sky)
    (tmp_path / "home").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "home")) as instance:
        with pytest.raises(ReleaseNotFoundError, match=r"'nosuch' .*'tiny' sample sky .*dr1"):
            register_release(instance, "nosuch", res["desi"], res["sample_sky"])
        assert instance.get_dynamic_partitions("releases") == []
        assert not is_published(sky, "dr1")
        release = register_release(instance, "dr1", res["desi"], res["sample_sky"])
        assert release == Release("dr1", "iron", "zcatalog/v1") and is_published(sky, "dr1")
        assert instance.get_dynamic_partitions("releases") == ["dr1"]


def test_a_real_archive_is_checked_against_its_listing(tmp_path):
    sky = make_tiny_sky(tmp_path / "sky", ["edr"])
    res = resources(str(tmp_path / "storage"), sky)
    (tmp_path / "home").mkdir()
    with (
        res["sample_sky"].serving(generate_missing=False) as archive,
        dg.DagsterInstance.local_temp(str(tmp_path / "home")) as instance,
    ):
        desi = DesiSourceResource(root_url=archive.desi_root_url, retry=FAST_RETRY)
        with pytest.raises(ReleaseNotFoundError, match=r"'dr1' is not published under http.*: edr"):
            register_release(instance, "dr1", desi, res["sample_sky"])  # never generated here
        assert instance.get_dynamic_partitions("releases") == []
        assert register_release(instance, "edr", desi, res["sample_sky"]) == Release("edr", "fuji")
        assert instance.get_dynamic_partitions("releases") == ["edr"]


def test_a_specprod_override_reads_its_zcatalog_folder_and_runs_carry_it(tmp_path):
    sky = make_tiny_sky(tmp_path / "sky", ["edr"])
    res = resources(str(tmp_path / "storage"), sky)
    public = desi_root(sky)
    # a rerun of edr in another production, whose catalogue is versioned
    rerun = Release("edr", "fuji_rerun", "zcatalog/v2")
    (public / layout.zcatalog_path(rerun)).parent.mkdir(parents=True)
    (public / layout.zcatalog_path(rerun)).write_bytes(b"x")
    desi = DesiSourceResource(release="edr", specprod="fuji_rerun", retry=FAST_RETRY)
    assert desi.pinned("edr") is None  # the folder is not pinned, so it is listed
    assert desi.release_for("edr", res["sample_sky"]) == rerun
    config = desi.run_config(rerun)["resources"]["desi"]["config"]
    assert (config["specprod"], config["zcatalog_dir"]) == ("fuji_rerun", "zcatalog/v2")
    assert DesiSourceResource(**config).pinned("edr") == rerun  # a run reads it unlisted
    with res["sample_sky"].serving(generate_missing=False) as archive:
        listed = {**config, "zcatalog_dir": "", "root_url": archive.desi_root_url}
        over_http = DesiSourceResource(**listed)
        assert over_http.release_for("edr", res["sample_sky"]) == rerun


def _fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A fresh DAGSTER_HOME with the repository's dagster.yaml, and an empty data root."""
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("ASTROCLIP_STORAGE", str(data))
    return home, data


def test_run_with_an_unknown_release_is_one_line_and_registers_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home, data = _fresh_home(tmp_path, monkeypatch)
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--release", "nosuch", "--skip-training"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--release 'nosuch'" in err, err
    assert "edr, dr1, dr2" in err  # what the sample sky does publish
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_dynamic_partitions("releases") == []
    assert not (data / "samplesky").exists()  # refused before generating anything


def test_partitions_sync_lets_dagster_materialize_in_a_fresh_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home, data = _fresh_home(tmp_path, monkeypatch)
    make_tiny_sky(data / "samplesky", ["edr"])  # the sample sky's place under the data root
    assert main(["partitions", "sync"]) == 0
    assert "edr (production fuji): added" in capsys.readouterr().out
    assert main(["partitions", "sync"]) == 0
    assert "edr (production fuji): already registered" in capsys.readouterr().out
    # the sky above is the tiny preset; nothing else is configured, so its root is found
    # under the data root ($ASTROCLIP_STORAGE)
    config = tmp_path / "tiny.yaml"
    config.write_text("resources:\n  sample_sky:\n    config: {size: tiny, releases: [edr]}\n")
    done = subprocess.run(
        [DAGSTER, "asset", "materialize", "-m", "pipelines.definitions", "-c", str(config)]
        + ["--select", "release_catalog", "--partition", "edr"],
        cwd=REPO_ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (data / "catalog" / "edr" / "selected.parquet").exists()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_dynamic_partitions("sky_partitions") == ["edr-1703"]
