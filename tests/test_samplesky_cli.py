"""The `astroclip sample-sky` subcommands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astroclip_core.cli import build_parser, main
from astroclip_core.storage import REPO_ROOT


def test_sample_sky_generate_and_preview(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "sky"
    args = ["sample-sky", "generate", "--root", str(root), "--size", "tiny"]
    assert main([*args, "--release", "edr", "--galaxies-per-pixel", "12", "--seed", "5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [r["release"] for r in summary["releases"]] == ["edr"]
    assert summary["releases"][0]["n_clean_galaxies"] > 0
    assert (root / "samplesky.json").exists() and (root / "truth" / "edr.parquet").exists()
    png = tmp_path / "preview.png"
    assert main(["sample-sky", "preview", "--root", str(root), "--out", str(png), "--n", "2"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_release_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "sky"
    with pytest.raises(SystemExit) as exit_:
        main(["sample-sky", "generate", "--root", str(root), "--size", "tiny", "--release", "dr9"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'dr9'" in err and "edr, dr1, dr2" in err, err
    assert not root.exists()  # refused before any work


def test_sample_sky_defaults_to_the_data_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from astroclip_core.samplesky.config import default_root

    monkeypatch.setenv("ASTROCLIP_STORAGE", str(tmp_path / "data"))
    assert default_root() == tmp_path / "data" / "samplesky"
    args = build_parser().parse_args(["sample-sky", "serve"])
    assert args.root is None  # resolved when the command runs, from the data root then
    monkeypatch.setenv("ASTROCLIP_STORAGE", "s3://bucket/prefix")  # served from disk: stays local
    assert default_root() == REPO_ROOT / "storage" / "samplesky"


def test_service_publishes_only_missing_releases(tmp_path: Path) -> None:
    from astroclip_core.samplesky.service import ensure_published, is_published, start_server

    first = ensure_published(tmp_path, ["edr"], seed=3, size="tiny")
    assert first is not None and is_published(tmp_path, "edr") and not is_published(tmp_path, "dr1")
    assert (tmp_path / ".generate.lock").exists()  # the lock lives with the sky it guards
    with pytest.raises(ValueError, match="no release 'nosuch'"):
        ensure_published(tmp_path, ["nosuch"], seed=3, size="tiny")
    assert ensure_published(tmp_path, ["edr"], seed=3, size="tiny") is None
    with pytest.raises(ValueError, match="another config"):
        ensure_published(tmp_path, ["edr"], seed=4, size="tiny")
    # A sky written by older generator code (no version in its manifest) is not reused.
    manifest = tmp_path / "samplesky.json"
    text = manifest.read_text()
    raw = json.loads(text)
    del raw["generator_version"]
    manifest.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="generator version 1"):
        ensure_published(tmp_path, ["edr", "dr1"], seed=3, size="tiny")
    assert not is_published(tmp_path, "dr1")
    manifest.write_text(text)
    server = start_server(tmp_path)
    try:
        assert server.desi_root_url.startswith("http://127.0.0.1:")
    finally:
        server.stop()
