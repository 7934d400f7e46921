"""HATS catalogues for lsdb: lsdb reads what astroclip_core.publish.hats writes, and its
cross-match agrees with the project's own (astroclip_core.sky.matching.crossmatch).

The second catalogue is the tiny sample sky's sweep sources, written as HATS. The pairs are
synthetic rows placed 0-6″ from randomly chosen sweep sources (so the nearest neighbour is not
always the source itself), with embeddings of two models. Small ``partition_rows`` spread both
catalogues over many HATS pixels, so matches cross pixel borders and need the 10″ margins.
"""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import astropy_healpix as ah
import lsdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pairs_fixture import make_pairs_table
from pipeline_support import make_tiny_sky

from astroclip_core.formats.legacysurvey import read_sweep
from astroclip_core.publish.hats import (
    HATS_MARGIN_ARCSEC,
    PAIRS_HATS_COLUMNS,
    HatsSettings,
    embedding_models,
    write_hats,
    write_release_hats,
)
from astroclip_core.samplesky.generate import legacysurvey_root
from astroclip_core.sky.healpix import pixels_of
from astroclip_core.sky.matching import crossmatch
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.embeddings import embeddings_table, write_embeddings
from astroclip_core.tables.pairs import write_pairs

RELEASE = "edr"
MODELS = ("tiny-v1", "tiny-v2")
EMBED_DIM = 8
N_PAIRS = 150
JITTER_MAX_ARCSEC = 6.0
MATCH_RADIUS_ARCSEC = 10.0  # = the margin: the widest radius lsdb matches completely
SMALL = HatsSettings(partition_rows=20)  # many pixels from a few hundred rows


def _sweeps(sky: Path) -> pa.Table:
    files = sorted(legacysurvey_root(sky).glob("*/sweep/*/sweep-*.fits"))
    assert files, f"no sweeps under {legacysurvey_root(sky)}"
    return pa.concat_tables([read_sweep(f) for f in files])


def _offset(
    ra_deg: np.ndarray, dec_deg: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    # positions moved 0..JITTER_MAX_ARCSEC in a random direction (small-angle offsets)
    sep_deg = rng.uniform(0.0, JITTER_MAX_ARCSEC, ra_deg.size) / 3600.0
    angle = rng.uniform(0.0, 2 * np.pi, ra_deg.size)
    dec = dec_deg + sep_deg * np.cos(angle)
    ra = ra_deg + sep_deg * np.sin(angle) / np.cos(np.radians(dec_deg))
    return ra % 360.0, dec


@pytest.fixture(scope="module")
def release_data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A storage root with synthetic pairs near the tiny sky's sweep sources, and embeddings."""
    root = tmp_path_factory.mktemp("hats")
    sky = make_tiny_sky(root / "sky", [RELEASE])
    sweeps = _sweeps(sky)
    rng = np.random.default_rng(5)
    n = min(N_PAIRS, sweeps.num_rows)
    chosen = np.sort(rng.choice(sweeps.num_rows, size=n, replace=False))
    ra, dec = _offset(
        sweeps.column("ra").to_numpy()[chosen], sweeps.column("dec").to_numpy()[chosen], rng
    )
    pairs = make_pairs_table(n, seed=3)
    replace = {
        "ra": pa.array(ra),
        "dec": pa.array(dec),
        "ls_release": sweeps.column("release").take(chosen).cast(pa.int16()),
        "brickid": sweeps.column("brickid").take(chosen),
        "objid": sweeps.column("objid").take(chosen),
        "healpix": pa.array(pixels_of(ra, dec).astype(np.int32)),
    }
    for name, values in replace.items():
        pairs = pairs.set_column(pairs.schema.get_field_index(name), name, values)
    layout = StorageLayout(str(root / "data"))
    embeddings = {}
    for pixel in np.unique(pairs.column("healpix").to_numpy()):
        part = pairs.filter(pc.equal(pairs.column("healpix"), int(pixel)))
        write_pairs(layout, RELEASE, int(pixel), part)
        for m, model in enumerate(MODELS):
            image = rng.normal(size=(part.num_rows, EMBED_DIM)).astype(np.float32) + m
            spectrum = rng.normal(size=(part.num_rows, EMBED_DIM)).astype(np.float32) - m
            table = embeddings_table(part, image, spectrum, model)
            write_embeddings(layout, RELEASE, model, int(pixel), table)
            for tid, i_emb in zip(part.column("targetid").to_pylist(), image, strict=True):
                embeddings[(model, tid)] = i_emb
    sweeps_hats = write_hats(sweeps, str(root / "hats-sweeps"), "sweeps", SMALL)
    result = write_release_hats(layout, RELEASE, SMALL, SMALL)
    return {
        "layout": layout,
        "pairs": pairs,
        "sweeps": sweeps,
        "embeddings": embeddings,
        "sweeps_hats": sweeps_hats,
        "result": result,
    }


def test_lsdb_reads_the_pairs_and_every_models_embeddings(release_data: dict) -> None:
    layout: StorageLayout = release_data["layout"]
    pairs: pa.Table = release_data["pairs"]
    assert embedding_models(layout, RELEASE) == sorted(MODELS)
    assert set(release_data["result"].outputs) == {"pairs", *(f"embeddings/{m}" for m in MODELS)}

    catalog = lsdb.open_catalog(layout.hats_pairs_dir(RELEASE))
    assert catalog.margin is not None
    assert catalog.margin.hc_structure.catalog_info.margin_threshold >= HATS_MARGIN_ARCSEC
    assert len(catalog.get_healpix_pixels()) > 1  # spread over pixels, as the test intends
    frame = catalog.compute()
    assert set(PAIRS_HATS_COLUMNS) <= set(frame.columns)
    assert "image" not in frame.columns and "flux" not in frame.columns
    by_id = frame.set_index("targetid").sort_index()
    expected = pairs.sort_by("targetid")
    assert by_id.index.tolist() == expected.column("targetid").to_pylist()
    for column in ("ra", "dec", "z", "flux_r", "split"):
        assert by_id[column].tolist() == expected.column(column).to_pylist(), column

    for model in MODELS:
        emb = lsdb.open_catalog(layout.hats_embeddings_dir(RELEASE, model))
        assert emb.margin is not None
        assert emb.margin.hc_structure.catalog_info.margin_threshold >= HATS_MARGIN_ARCSEC
        rows = emb.compute()
        assert sorted(rows["targetid"]) == sorted(expected.column("targetid").to_pylist())
        for tid, vector in zip(rows["targetid"], rows["image_embedding"], strict=True):
            np.testing.assert_array_equal(
                np.asarray(vector, np.float32), release_data["embeddings"][(model, tid)]
            )


def _pixel_of(catalog, ra_deg: float, dec_deg: float):
    """The HATS pixel of ``catalog`` that holds a position."""
    for pixel in catalog.get_healpix_pixels():
        nside = 2**pixel.order
        if (
            ah.lonlat_to_healpix(ra_deg * u.deg, dec_deg * u.deg, nside, order="nested")
            == pixel.pixel
        ):
            return pixel
    raise AssertionError(f"({ra_deg}, {dec_deg}) is in no pixel of {catalog.name}")


def _nested(a, b) -> bool:
    """True when one HEALPix pixel contains the other (or they are the same)."""
    low, high = (a, b) if a.order <= b.order else (b, a)
    return high.pixel >> (2 * (high.order - low.order)) == low.pixel


def _ids(frame, columns: list[str]) -> list[tuple]:
    # rows of ``columns`` as tuples, from a DataFrame or a dict of lists
    return list(zip(*(list(frame[c]) for c in columns), strict=True))


@pytest.mark.parametrize("left_name", ["pairs", "sweeps"])
def test_lsdb_crossmatch_equals_the_projects(release_data: dict, left_name: str) -> None:
    layout: StorageLayout = release_data["layout"]
    catalogs = {
        "pairs": lsdb.open_catalog(layout.hats_pairs_dir(RELEASE)),
        "sweeps": lsdb.open_catalog(release_data["sweeps_hats"].path),
    }
    tables = {"pairs": release_data["pairs"], "sweeps": release_data["sweeps"]}
    keys = {"pairs": ["targetid"], "sweeps": ["release", "brickid", "objid"]}
    right_name = "sweeps" if left_name == "pairs" else "pairs"
    assert catalogs[right_name].margin is not None

    matched = (
        catalogs[left_name]
        .crossmatch(
            catalogs[right_name],
            n_neighbors=1,
            radius_arcsec=MATCH_RADIUS_ARCSEC,
            suffixes=("_l", "_r"),
            suffix_method="all_columns",
        )
        .compute()
    )
    left_keys = [f"{k}_l" for k in keys[left_name]]
    right_keys = [f"{k}_r" for k in keys[right_name]]
    got = dict(zip(_ids(matched, left_keys), _ids(matched, right_keys), strict=True))
    got_sep = dict(zip(_ids(matched, left_keys), matched["_dist_arcsec"].tolist(), strict=True))

    left, right = tables[left_name], tables[right_name]
    idx1, idx2, sep = crossmatch(
        left.column("ra").to_numpy(),
        left.column("dec").to_numpy(),
        right.column("ra").to_numpy(),
        right.column("dec").to_numpy(),
        radius_arcsec=MATCH_RADIUS_ARCSEC,
    )
    left_ids = _ids(left.select(keys[left_name]).to_pydict(), keys[left_name])
    right_ids = _ids(right.select(keys[right_name]).to_pydict(), keys[right_name])
    want = {left_ids[i]: right_ids[j] for i, j in zip(idx1, idx2, strict=True)}

    assert want, "the project's crossmatch found nothing: the test data are wrong"
    assert got == want
    # Some matches pair rows of unrelated pixels: lsdb found those only through the margin.
    across = sum(
        not _nested(
            _pixel_of(catalogs[left_name], ra_l, dec_l),
            _pixel_of(catalogs[right_name], ra_r, dec_r),
        )
        for ra_l, dec_l, ra_r, dec_r in zip(
            matched["ra_l"], matched["dec_l"], matched["ra_r"], matched["dec_r"], strict=True
        )
    )
    assert across >= 1
    for i, s in zip(idx1, sep, strict=True):
        assert got_sep[left_ids[i]] == pytest.approx(s, abs=1e-6)
    if left_name == "pairs":
        # every pair lies within 6″ of the source it was placed at; most match it
        own = {
            (t,): (r, b, o)
            for t, r, b, o in zip(
                *(
                    release_data["pairs"].column(c).to_pylist()
                    for c in ("targetid", "ls_release", "brickid", "objid")
                ),
                strict=True,
            )
        }
        assert len(got) == release_data["pairs"].num_rows
        assert sum(got[k] == own[k] for k in got) >= 0.9 * len(got)


def test_rewriting_replaces_the_collection(release_data: dict) -> None:
    layout: StorageLayout = release_data["layout"]
    pairs_dir = Path(layout.hats_pairs_dir(RELEASE))
    before = sorted(p.relative_to(pairs_dir) for p in pairs_dir.rglob("*"))
    first = pairs_dir.stat().st_ino
    fewer = release_data["pairs"].slice(0, 20).select(list(PAIRS_HATS_COLUMNS))
    write_hats(fewer, str(pairs_dir), "pairs", SMALL)
    assert pairs_dir.stat().st_ino != first  # a new folder took the old one's place
    assert len(lsdb.open_catalog(str(pairs_dir)).compute()) == 20
    leftovers = [p.name for p in pairs_dir.parent.iterdir() if ".tmp" in p.name]
    assert not leftovers, leftovers
    assert before  # the first write had files


def test_a_row_without_a_position_is_refused(tmp_path: Path) -> None:
    table = pa.table({"ra": [10.0, float("nan")], "dec": [1.0, 2.0], "x": [1, 2]})
    with pytest.raises(ValueError, match="'probe': 1 rows with no finite ra"):
        write_hats(table, str(tmp_path / "probe"), "probe")
    assert not (tmp_path / "probe").exists()


def test_the_asset_writes_the_release_through_dagster(release_data: dict, tmp_path: Path) -> None:
    import dagster as dg

    from pipelines import publish
    from pipelines.definitions import defs
    from pipelines.partitions import releases_partitions
    from pipelines.resources import StorageResource
    from pipelines.runner import _materialize

    layout: StorageLayout = release_data["layout"]
    resources = {**defs.resources, "storage": StorageResource(root=layout.root)}
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        instance.add_dynamic_partitions(releases_partitions.name, [RELEASE])
        _materialize(instance, [publish.hats_catalogs], RELEASE, resources)
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(dg.AssetKey("hats_catalogs"), asset_partitions=[RELEASE]),
            limit=1,
        ).records
    assert records
    metadata = records[0].asset_materialization.metadata
    assert metadata["margin_arcsec"].value == HATS_MARGIN_ARCSEC
    assert metadata["models"].value == len(MODELS)
    assert metadata["rows"].value == release_data["pairs"].num_rows
    for model in MODELS:
        assert len(lsdb.open_catalog(layout.hats_embeddings_dir(RELEASE, model)).compute()) == (
            release_data["pairs"].num_rows
        )
