"""The raw cache policy: parsing, eviction of a partition's own files, and the size cap."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from astroclip_core.ingest.rawcache import (
    RawCachePolicy,
    apply_after_pairs,
    cache_files,
    enforce_cap,
)
from astroclip_core.sources.legacysurvey import LegacySurveySource
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.interim import read_interim
from pipelines import ingest
from pipelines.resources import StorageResource
from pipelines.runner import RunOptions, _materialize, run_all
from tests.pipeline_support import make_tiny_sky, read_pairs_folder, resources, tables_equal

STAGES = ("spectra", "cutouts")
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("text", "mode", "cap_bytes"),
    [
        ("keep", "keep", None),
        (" Evict ", "evict", None),
        ("2gb", "cap", 2_000_000_000),
        ("0.5 GB", "cap", 500_000_000),
        (".25gb", "cap", 250_000_000),
    ],
)
def test_policy_parses(text: str, mode: str, cap_bytes: int | None) -> None:
    policy = RawCachePolicy.parse(text)
    assert (policy.mode, policy.cap_bytes) == (mode, cap_bytes)
    assert RawCachePolicy.parse(str(policy)) == policy


@pytest.mark.parametrize("text", ["", "2", "2tb", "-1gb", "0gb", "evicts", "gb", "1e3gb"])
def test_bad_policy_names_the_value(text: str) -> None:
    with pytest.raises(ValueError, match=f"raw cache policy '{text}'.*keep.*evict.*2gb"):
        RawCachePolicy.parse(text)


def test_a_bad_policy_in_the_resource_is_refused() -> None:
    with pytest.raises(ValueError, match="'lots'"):
        StorageResource(root="/tmp/x", raw_cache="lots").raw_cache_policy()


def _etl(base: Path, name: str, res: dict) -> None:
    home = base / f"home-{name}"
    home.mkdir()
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        run_all(RunOptions(release="edr", skip_training=True), res, instance)


def _raw(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / "raw").rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A tiny-sky ETL run that keeps its raw cache."""
    base = tmp_path_factory.mktemp("rawcache")
    sky = make_tiny_sky(base / "sky", ["edr"])
    storage = base / "kept"
    res = {
        **resources(str(storage), sky),
        "storage": StorageResource(root=str(storage), raw_cache="keep"),
    }
    _etl(base, "kept", res)
    return base, sky, storage


@pytest.mark.slow
def test_evict_removes_exactly_the_partitions_own_raw_files(kept_run, tmp_path: Path) -> None:
    import shutil

    base, sky, kept = kept_run
    storage = tmp_path / "copy"
    shutil.copytree(kept, storage)
    layout = StorageLayout(str(storage))
    before = _raw(storage)
    pixel = 1703
    # What the partition alone read, found independently of the records: the coadds whose
    # nside-64 pixel lies in it, and the cutouts at its matched sources.
    coadds = {
        p
        for p in before
        if "/coadd-" in p and int(p.rsplit("-", 1)[1].removesuffix(".fits")) // 16 == pixel
    }
    matches = read_interim(layout, "matches", "edr", pixel)
    src = LegacySurveySource()
    keys = {
        src.cutout_key(r, d)
        for r, d in zip(
            matches.column("ra").to_numpy(), matches.column("dec").to_numpy(), strict=True
        )
    }
    cutouts = {
        p for p in before if "/cutouts/" in p and p.split("/cutouts/ls-dr9/")[1][:-5] in keys
    }
    assert coadds and cutouts
    outcome = apply_after_pairs(layout, RawCachePolicy.parse("evict"), "edr", pixel, STAGES, True)
    after = _raw(storage)
    assert before - after == coadds | cutouts
    assert outcome.files_removed == len(coadds | cutouts)
    assert any("/sweep/" in p for p in after)  # shared by partitions: kept
    # No empty folders are left behind where the files were.
    assert not [d for d in (storage / "raw").rglob("*") if d.is_dir() and not any(d.iterdir())]
    assert tables_equal(
        read_pairs_folder(str(kept / "pairs" / "edr")),
        read_pairs_folder(str(storage / "pairs" / "edr")),
    )
    # A failed pairs check keeps the files a re-run needs.
    other = apply_after_pairs(layout, RawCachePolicy.parse("evict"), "edr", 1702, STAGES, False)
    assert other.files_removed == 0 and _raw(storage) == after


@pytest.mark.slow
def test_cap_removes_least_recently_used_down_to_the_cap(kept_run, tmp_path: Path) -> None:
    import shutil

    _, _, kept = kept_run
    storage = tmp_path / "copy"
    shutil.copytree(kept, storage)
    layout = StorageLayout(str(storage))
    files = sorted(cache_files(layout))
    for i, (path, _, _) in enumerate(files):  # distinct ages: the i-th file is i hours old
        os.utime(path, (1e9 - 3600 * i, 1e9 - 3600 * i))
    total = sum(size for _, size, _ in files)
    cap = total // 3
    n, removed, left = enforce_cap(layout, cap)
    remaining = cache_files(layout)
    assert left == sum(size for _, size, _ in remaining) <= cap
    assert removed == total - left and n == len(files) - len(remaining)
    # The oldest went first: every file left is younger than every file removed.
    gone = {p for p, _, _ in files} - {p for p, _, _ in remaining}
    assert max(i for i, (p, _, _) in enumerate(files) if p not in gone) < min(
        i for i, (p, _, _) in enumerate(files) if p in gone
    )
    assert enforce_cap(layout, cap)[0] == 0  # already under the cap


def _interim_stages(root: Path) -> set[str]:
    """The stages with an interim table of partition 1703 of edr under ``root``."""
    layout = StorageLayout(str(root))
    stages = ("spectra", "sources", "matches", "cutouts")
    return {s for s in stages if Path(layout.interim_file("edr", 1703, s)).is_file()}


@pytest.mark.slow
def test_keep_keeps_every_interim_table(kept_run) -> None:
    _, _, kept = kept_run
    assert _interim_stages(kept) == {"spectra", "sources", "matches", "cutouts"}


@pytest.mark.slow
def test_default_run_evicts_and_gives_the_same_pairs(kept_run) -> None:
    base, sky, kept = kept_run
    storage = base / "evicted"
    _etl(base, "evicted", resources(str(storage), sky))
    assert tables_equal(
        read_pairs_folder(str(kept / "pairs" / "edr")),
        read_pairs_folder(str(storage / "pairs" / "edr")),
    )
    left = _raw(storage)
    assert not [p for p in left if "coadd-" in p or "/cutouts/" in p]
    assert [p for p in left if "/sweep/" in p]
    # The interim tables the pairs hold again are gone (no temporaries left either); the small
    # ones (sources, matches) and the failures tables stay.
    assert _interim_stages(storage) == {"sources", "matches"}
    for stage in STAGES:
        assert not [p for p in (storage / "interim" / stage).rglob("*") if p.is_file()]
    assert (storage / "failures" / "edr" / "healpix=1703" / "cutouts.parquet").is_file()


@pytest.mark.slow
def test_rerunning_pairs_alone_after_eviction_fetches_its_inputs_again(
    kept_run, tmp_path: Path
) -> None:
    _, sky, kept = kept_run
    storage = tmp_path / "evicted"
    home = tmp_path / "home"
    home.mkdir()
    res = resources(str(storage), sky)
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        run_all(RunOptions(release="edr", skip_training=True), res, instance)
        assert _interim_stages(storage) == {"sources", "matches"}
        pairs_file = Path(StorageLayout(str(storage)).pairs_file("edr", 1703))
        before = pairs_file.read_bytes()
        _materialize(instance, [ingest.pairs], "edr-1703", res)
        record = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("pairs"), asset_partitions=["edr-1703"]),
            limit=1,
        ).records[0]
        md = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    assert md["interim_rederived"] == "spectra, cutouts"
    assert md["interim_removed"] == "cutouts, spectra"
    assert pairs_file.read_bytes() == before
    assert _interim_stages(storage) == {"sources", "matches"}
    assert not [p for p in _raw(storage) if "coadd-" in p or "/cutouts/" in p]
    assert tables_equal(
        read_pairs_folder(str(kept / "pairs" / "edr")),
        read_pairs_folder(str(storage / "pairs" / "edr")),
    )


@pytest.mark.slow
def test_two_runs_of_one_partition_at_once_both_succeed(kept_run, tmp_path: Path) -> None:
    """Two processes ingest the same partition into one data root at the same time (evict).

    Whichever pairs step comes second finds its interim tables evicted by the first, or
    rewritten under it; both must succeed and leave the same pairs as a run alone.
    """
    _, sky, kept = kept_run
    storage = tmp_path / "storage"
    env = {**os.environ, "ASTROCLIP_RAW_CACHE": "evict", "OMP_NUM_THREADS": "1"}
    events = tmp_path / "events"  # both processes append their stage lines to this one file
    procs = []
    for name in ("a", "b"):
        args = [str(storage), str(sky), str(tmp_path / f"home-{name}"), str(events)]
        with (tmp_path / f"{name}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.stage_process", *args, "catalog", "ingest"],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    for name, proc in zip("ab", procs, strict=True):
        code = proc.wait(timeout=600)
        assert code == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    # The premise: both ingest stages had started before either finished.
    lines = events.read_text().splitlines()
    first_done = next(i for i, line in enumerate(lines) if line.startswith("done ingest"))
    assert lines[:first_done].count("start ingest") == 2, lines
    assert tables_equal(
        read_pairs_folder(str(kept / "pairs" / "edr")),
        read_pairs_folder(str(storage / "pairs" / "edr")),
    )
    assert _interim_stages(storage) == {"sources", "matches"}


def test_evict_and_cap_on_an_fsspec_root() -> None:
    import fsspec

    from astroclip_core import fsio
    from astroclip_core.ingest.rawcache import record_raw_files

    layout = StorageLayout("memory://rawcache-test/run")
    own = [layout.raw_desi(f"edr/coadd-{i}.fits") for i in range(3)]
    shared = [layout.raw_legacysurvey("dr9", "south/sweep/9.0/sweep-a.fits")]
    other = [layout.cutout_cache("dr9", "ls-dr9", "150/other")]
    for i, url in enumerate(own + shared + other):
        fsio.atomic_write_bytes(url, b"x" * (100 + i))
    record_raw_files(layout, "edr", 1, "spectra", own, shared)
    outcome = apply_after_pairs(layout, RawCachePolicy.parse("evict"), "edr", 1, STAGES, True)
    assert (outcome.files_removed, outcome.bytes_removed) == (3, 100 + 101 + 102)
    assert sorted(u for u in own + shared + other if fsio.exists(u)) == sorted(shared + other)
    cap = RawCachePolicy(mode="cap", cap_bytes=104)
    after = apply_after_pairs(layout, cap, "edr", 1, STAGES, True)
    assert after.cache_bytes_after is not None and after.cache_bytes_after <= 104
    assert sum(fsio.exists(u) for u in shared + other) == 1
    with pytest.raises(ValueError, match="not under the raw cache"):
        record_raw_files(layout, "edr", 1, "spectra", [layout.pairs_file("edr", 1)])
    fsspec.filesystem("memory").rm("/rawcache-test", recursive=True)
