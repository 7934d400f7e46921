"""The written sample sky: determinism, release nesting, traps, selection and truth."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from astroclip_core.formats.desi import GalaxySelection, read_coadd, read_zcatalog
from astroclip_core.formats.legacysurvey import read_sweep
from astroclip_core.releases import KNOWN_RELEASES, Release, discover_releases
from astroclip_core.samplesky.config import preset
from astroclip_core.samplesky.generate import (
    MANIFEST_NAME,
    desi_root,
    generate,
    legacysurvey_root,
    read_manifest,
    truth_path,
    write_manifest,
)
from astroclip_core.samplesky.lazy import coadd_relpaths, sky_file_bytes
from astroclip_core.sky.healpix import pixels_of
from astroclip_core.sources import layout

_ROOTS: dict[str, Path] = {}


def tiny_sky_root(factory: pytest.TempPathFactory) -> Path:
    """The tiny sample sky, both releases, generated once per test session."""
    if "tiny" not in _ROOTS:
        root = factory.mktemp("samplesky-tiny")
        generate(root, preset("tiny"))
        _ROOTS["tiny"] = root
    return _ROOTS["tiny"]


@pytest.fixture(scope="session")
def sky_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of the tiny sample sky."""
    return tiny_sky_root(tmp_path_factory)


def _coadd_on_disk(root: Path, relpath: str, folder: Path) -> Path:
    """A coadd of the sky (drawn on request: not on disk) written to a file in ``folder``."""
    path = folder / relpath.replace("/", "_")
    path.write_bytes(sky_file_bytes(root, relpath))
    return path


def _hashes(root: Path, under: str = "") -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / under).rglob("*"))
        if p.is_file()
    }


def test_generation_is_deterministic_and_releases_do_not_touch_each_other(tmp_path: Path) -> None:
    cfg = preset("tiny", galaxies_per_pixel=15)
    generate(tmp_path / "a", cfg, ["edr"])
    generate(tmp_path / "b", cfg, ["edr"])
    first = _hashes(tmp_path / "a")
    assert first == _hashes(tmp_path / "b")
    assert len(first) > 5
    generate(tmp_path / "a", cfg, ["dr1"])
    after = _hashes(tmp_path / "a")
    assert {k: v for k, v in after.items() if k in first} == first
    assert any(k.startswith("public/dr1/") for k in after)


def test_a_third_release_leaves_the_first_two_byte_identical(tmp_path: Path) -> None:
    cfg = preset("tiny", galaxies_per_pixel=15)
    assert [fp.name for fp in cfg.releases][-1] == "dr2"
    two = replace(cfg, releases=cfg.releases[:-1])
    generate(tmp_path / "two", two, ["edr", "dr1"])
    generate(tmp_path / "three", cfg, ["edr", "dr1"])
    old = _hashes(tmp_path / "two")
    before = _hashes(tmp_path / "three")
    old.pop(MANIFEST_NAME), before.pop(MANIFEST_NAME)  # the config itself names dr2
    assert before == old  # describing dr2 changed no byte of edr, dr1 or the imaging sky
    generate(tmp_path / "three", cfg, ["dr2"])
    after = _hashes(tmp_path / "three")
    assert {k: after[k] for k in before} == before
    loa = [k for k in after if k.startswith("public/dr2/spectro/redux/loa/")]
    assert any(k.endswith("zall-pix-loa.fits") for k in loa) and len(loa) > 3
    assert discover_releases(str(desi_root(tmp_path / "three"))) == [
        Release("dr1", "iron", "zcatalog/v1"),
        Release("dr2", "loa", "zcatalog/v1"),
        Release("edr", "fuji", "zcatalog"),
    ]


def test_the_manifest_keeps_each_release_zcatalog_folder(tmp_path: Path) -> None:
    cfg = preset("tiny")
    write_manifest(tmp_path, cfg)
    assert read_manifest(tmp_path) == cfg
    assert [fp.zcatalog_dir for fp in cfg.releases] == ["zcatalog", "zcatalog/v1", "zcatalog/v1"]
    raw = json.loads((tmp_path / MANIFEST_NAME).read_text())
    del raw["releases"][1]["zcatalog_dir"]  # as written before the folder was recorded
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"release 'dr1' has no zcatalog_dir .*older code"):
        read_manifest(tmp_path)


def test_other_seed_gives_other_sky(tmp_path: Path) -> None:
    generate(tmp_path / "a", preset("tiny", galaxies_per_pixel=15), ["edr"])
    generate(tmp_path / "b", preset("tiny", seed=7, galaxies_per_pixel=15), ["edr"])
    a, b = _hashes(tmp_path / "a", "truth"), _hashes(tmp_path / "b", "truth")
    assert a.keys() == b.keys() and a != b


def test_selection_removes_every_kind_of_trap(sky_root: Path) -> None:
    for name in ("edr", "dr1"):
        rel = KNOWN_RELEASES[name]
        table, report = read_zcatalog(
            desi_root(sky_root) / layout.zcatalog_path(rel), columns=["TARGETID"]
        )
        removed = dict(report.cuts)
        for cut in (
            "ZCAT_PRIMARY",
            "OBJTYPE==TGT",
            "COADD_FIBERSTATUS==0",
            "SPECTYPE==GALAXY",
            "ZWARN==0",
            "DELTACHI2>25",
        ):
            assert removed[cut] > 0, f"{name}: cut {cut} removed nothing"
        ids = table["targetid"].to_numpy()
        assert np.unique(ids).size == ids.size
        truth = pq.read_table(truth_path(sky_root, name))
        clean = truth.filter(truth["is_clean_galaxy"])
        # The selection's redshift range also cuts clean galaxies (ELGs reach z 1.6); those
        # within 1e-3 of its edges may fall either side (the catalogue Z has an error).
        z, z_max = clean["z"].to_numpy(), GalaxySelection().z_max
        ids_clean = clean["targetid"].to_numpy()
        inside = ids_clean[z < z_max - 1e-3] if z_max is not None else ids_clean
        edge = ids_clean[np.abs(z - z_max) <= 1e-3] if z_max is not None else ids_clean[:0]
        assert set(inside.tolist()) <= set(ids.tolist())
        assert set(ids.tolist()) <= set(inside.tolist()) | set(edge.tolist())
    edr_sv, report = read_zcatalog(
        desi_root(sky_root) / layout.zcatalog_path(KNOWN_RELEASES["edr"]),
        columns=["TARGETID"],
        selection=GalaxySelection(primary_column="SV_PRIMARY"),
    )
    assert dict(report.cuts)["SV_PRIMARY"] > 0 and edr_sv.num_rows > 0


def test_truth_matches_sweeps_with_jitter_and_traps(sky_root: Path) -> None:
    truth = pq.read_table(truth_path(sky_root, "dr1")).to_pydict()
    sweeps = [read_sweep(p) for p in sorted(legacysurvey_root(sky_root).rglob("sweep-*.fits"))]
    key = {}
    for t in sweeps:
        for b, o, ra, dec in zip(
            *(t[c].to_numpy() for c in ("brickid", "objid", "ra", "dec")), strict=True
        ):
            key[(int(b), int(o))] = (ra, dec)
    matched = [i for i, b in enumerate(truth["brickid"]) if b is not None]
    unmatched = [
        i for i, b in enumerate(truth["brickid"]) if b is None and truth["kind"][i] != "sky"
    ]
    assert unmatched, "some spectra must have no imaging source"
    ra_t, dec_t = np.array(truth["target_ra"]), np.array(truth["target_dec"])
    ra_s, dec_s = np.array(truth["ls_ra"], dtype=float), np.array(truth["ls_dec"], dtype=float)
    sep = np.hypot((ra_s - ra_t) * np.cos(np.radians(dec_t)), dec_s - dec_t) * 3600
    assert np.all((sep[matched] > 0.099) & (sep[matched] < 0.301))
    for i in matched:
        assert key[(truth["brickid"][i], truth["objid"][i])] == pytest.approx((ra_s[i], dec_s[i]))
    # Border traps: target and its imaging source in different nside-16 pixels.
    straddle = pixels_of(ra_t[matched], dec_t[matched]) != pixels_of(ra_s[matched], dec_s[matched])
    assert straddle.sum() > 0
    # Unmatched spectra really have nothing within 1".
    all_ra = np.array([v[0] for v in key.values()])
    all_dec = np.array([v[1] for v in key.values()])
    for i in unmatched:
        d = np.hypot((all_ra - ra_t[i]) * np.cos(np.radians(dec_t[i])), all_dec - dec_t[i]) * 3600
        assert d.min() > 1.0
    # Close pairs: some matched sources have a neighbour under 2".
    n_pairs = 0
    for i in matched:
        d = np.hypot((all_ra - ra_s[i]) * np.cos(np.radians(dec_s[i])), all_dec - dec_s[i]) * 3600
        n_pairs += int(np.sum((d > 0.01) & (d < 2.0)) > 0)
    assert n_pairs > 0


def test_dr1_reobserves_edr_galaxies_with_new_noise(sky_root: Path, tmp_path: Path) -> None:
    edr = pq.read_table(truth_path(sky_root, "edr")).to_pydict()
    dr1 = pq.read_table(truth_path(sky_root, "dr1")).to_pydict()
    assert set(dr1["healpix"]) > set(edr["healpix"])
    z_dr1 = dict(zip(dr1["targetid"], dr1["z"], strict=True))
    assert set(edr["targetid"]) <= set(z_dr1)
    assert all(z_dr1[t] == z for t, z in zip(edr["targetid"], edr["z"], strict=True))
    rel_e, rel_d = KNOWN_RELEASES["edr"], KNOWN_RELEASES["dr1"]
    zcat, _ = read_zcatalog(
        desi_root(sky_root) / layout.zcatalog_path(rel_e),
        columns=["TARGETID", "SURVEY", "PROGRAM", "HEALPIX"],
    )
    row = zcat.slice(0, 1).to_pylist()[0]
    a = read_coadd(
        _coadd_on_disk(
            sky_root,
            layout.coadd_path(rel_e, row["survey"], row["program"], row["healpix"]),
            tmp_path,
        ),
        [row["targetid"]],
    )
    b = read_coadd(
        _coadd_on_disk(
            sky_root,
            layout.coadd_path(rel_d, row["survey"], row["program"], row["healpix"]),
            tmp_path,
        ),
        [row["targetid"]],
    )
    fa, fb = np.array(a["flux"][0].as_py()), np.array(b["flux"][0].as_py())
    assert not np.array_equal(fa, fb)
    # Same galaxy: the noise differs, the signal does not (smoothed spectra correlate).
    k = np.ones(101) / 101
    assert np.corrcoef(np.convolve(fa, k, "valid"), np.convolve(fb, k, "valid"))[0, 1] > 0.5


def test_coadds_have_masked_pixels_with_zero_ivar(sky_root: Path, tmp_path: Path) -> None:
    rel = KNOWN_RELEASES["edr"]
    relpaths = [r for r in coadd_relpaths(sky_root) if r.startswith(layout.specprod_root(rel))]
    masks = [read_coadd(_coadd_on_disk(sky_root, r, tmp_path)) for r in relpaths[:20]]
    n_masked = 0
    for table in masks:
        for m, iv in zip(table["mask"].to_pylist(), table["ivar"].to_pylist(), strict=True):
            m, iv = np.array(m), np.array(iv)
            assert np.all(iv[m != 0] == 0)
            n_masked += int(np.sum(m != 0))
    assert n_masked > 0


def test_truth_tracers_reads_each_targets_tracer_and_none_for_a_missing_one(tmp_path) -> None:
    import pyarrow as pa

    from astroclip_core.samplesky.service import truth_tracers

    url = str(tmp_path / "edr.parquet")
    pq.write_table(pa.table({"targetid": [5, 7, 9], "tracer": ["BGS", "ELG", "LRG"]}), url)
    got = truth_tracers(url, [9, 5, 8, 7])
    assert got.tolist() == ["LRG", "BGS", None, "ELG"]
