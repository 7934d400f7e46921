"""DR9 coadd bricks: exact .fits.fz files, windows, and one stamp whether served or cut locally.

Uses a tiny sample sky of its own (brick files are drawn into the sky folder when first asked
for) and the four bricks that meet at one brick corner, so every stamp here needs at most
those 12 brick images.
"""

from __future__ import annotations

import os
from pathlib import Path

import fitsio
import numpy as np
import pyarrow as pa
import pytest
import requests

from astroclip_core.formats import FormatError
from astroclip_core.formats.legacysurvey_bricks import (
    SURVEY_BRICKS_COLUMNS,
    BrickImageFile,
    brick_image_header,
    read_brick_image,
    write_brick_image,
)
from astroclip_core.ingest.bricks import (
    ImagingCost,
    choose_imaging,
    cutouts_from_bricks,
    stamp_corner_bricks,
)
from astroclip_core.ingest.cutouts import fetch_partition_cutouts
from astroclip_core.ingest.rawcache import evict_partition
from astroclip_core.samplesky.bricks import QUANTUM_NMGY
from astroclip_core.samplesky.config import SIZE_PRESETS
from astroclip_core.samplesky.cutouts import CutoutRenderer
from astroclip_core.samplesky.generate import legacysurvey_root
from astroclip_core.samplesky.ids import brick_table
from astroclip_core.samplesky.server import SampleSkyServer, serve_sample_sky
from astroclip_core.sky.bricks import BRICK_PIXSCALE_ARCSEC, BrickWindow, plan_stamp
from astroclip_core.sky.healpix import pixels_of
from astroclip_core.sources import layout
from astroclip_core.sources.bricks import BrickCatalog, fetch_brick_catalog
from astroclip_core.sources.faults import FaultConfig, FaultServer, proxy_backend
from astroclip_core.sources.http import RetryPolicy
from astroclip_core.sources.legacysurvey import LegacySurveySource
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.interim import read_failures, read_interim, write_interim
from tests.pipeline_support import make_tiny_sky

POLICY = RetryPolicy(max_attempts=3, backoff_base_s=0.0, read_timeout_s=30.0)
PIXEL = 1703  # the tiny sky's edr partition


@pytest.fixture(scope="module")
def sky(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny sample sky of this module's own (brick files get drawn into it)."""
    return make_tiny_sky(tmp_path_factory.mktemp("bricks") / "sky", ["edr"])


@pytest.fixture(scope="module")
def server(sky: Path):
    """The sample-sky server over that sky."""
    with serve_sample_sky(sky) as srv:
        yield srv


@pytest.fixture(scope="module")
def positions(sky: Path) -> dict[str, np.ndarray]:
    """Positions around one brick corner inside the footprint: one 5 px from the corner (its
    stamp needs all four bricks), and sweep sources whose stamps lie in one of them."""
    renderer = CutoutRenderer(sky)
    bricks = renderer.bricks
    cat = renderer.catalog()
    # The corner at (RA1, DEC1) of the brick of a sweep source inside the sky, where the brick
    # row below has its column boundary there too (rows of equal brick counts): four bricks.
    inside = np.flatnonzero(pixels_of(cat["ra"], cat["dec"]) == PIXEL)
    step_deg = 5 * BRICK_PIXSCALE_ARCSEC / 3600.0
    for i in inside:
        row = int(bricks.index.owners(cat["ra"][i : i + 1], cat["dec"][i : i + 1])[0])
        ra1, dec1 = float(bricks.index.ra1_deg[row]), float(bricks.index.dec1_deg[row])
        corner = (ra1 + step_deg / np.cos(np.radians(dec1)), dec1 + step_deg)
        around = {int(r) for r in plan_parts(bricks.index, *corner)}
        if len(around) == 4 and pixels_of(np.array([ra1]), np.array([dec1]))[0] == PIXEL:
            break
    # Three stamps 250 pixels diagonally into three of the bricks (one brick each).
    offsets = [(-250, 250), (250, 250), (250, -250)]
    ra = [corner[0]] + [
        corner[0] - dx * step_deg / 5 / np.cos(np.radians(dec1)) for dx, _ in offsets
    ]
    dec = [corner[1]] + [corner[1] + dy * step_deg / 5 for _, dy in offsets]
    return {"ra": np.array(ra), "dec": np.array(dec), "corner_bricks": np.array(sorted(around))}


def plan_parts(index, ra: float, dec: float) -> list[int]:
    """Index rows a 152-pixel stamp at (ra, dec) draws on."""
    return [p.row for p in plan_stamp(index, float(ra), float(dec), 152, BRICK_PIXSCALE_ARCSEC)]


@pytest.fixture(scope="module")
def catalog(server: SampleSkyServer, tmp_path_factory: pytest.TempPathFactory) -> BrickCatalog:
    """The sample sky's brick catalog, fetched through its server."""
    cache = StorageLayout(str(tmp_path_factory.mktemp("catalog")))
    return fetch_brick_catalog(server.legacysurvey_root_url, cache)


def _source(server: SampleSkyServer, root: str = "") -> LegacySurveySource:
    return LegacySurveySource(
        root_url=server.legacysurvey_root_url,
        cutout_url=server.cutout_url,
        brick_root_url=root,
    )


def test_fits_fz_round_trip_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    image = rng.normal(0.0, 0.01, (3600, 3600))
    image[:700] = 0.0  # whole tiles of no data
    image[2000:2010, 100:110] = rng.uniform(100.0, 3000.0, (10, 10))  # bright cores
    image[3000, 3000] = -5.0
    image = (np.round(image / QUANTUM_NMGY) * QUANTUM_NMGY).astype(np.float32)
    header = brick_image_header("1503p010", 42, "r", 150.3, 1.0, (150.2, 150.4, 0.9, 1.1))
    path = tmp_path / "legacysurvey-1503p010-image-r.fits.fz"
    write_brick_image(path, image, header, QUANTUM_NMGY)
    assert path.stat().st_size < image.nbytes / 2  # compressed
    back = read_brick_image(path, "1503p010")
    assert back.dtype == np.float32 and np.array_equal(back, image)
    opened = BrickImageFile(path, "1503p010")
    win = BrickWindow(3550, 3600, 1995, 2107)
    assert np.array_equal(opened.window(win), image[win.y0 : win.y1, win.x0 : win.x1])
    opened.close()
    with pytest.raises(FormatError, match="BRICKNAM='1503p010', expected '1503p012'"):
        read_brick_image(path, "1503p012")
    damaged = tmp_path / "damaged.fits.fz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4000] = bytes(4000)
    damaged.write_bytes(bytes(data))
    with pytest.raises(FormatError):
        read_brick_image(damaged)


def test_a_window_is_the_same_slice_of_the_whole_brick(sky: Path, positions) -> None:
    bricks = CutoutRenderer(sky).bricks
    row = int(positions["corner_bricks"][0])
    whole = bricks.window(row, BrickWindow(0, 3600, 0, 3600), "z")[0]
    assert np.all(np.round(whole / QUANTUM_NMGY) * QUANTUM_NMGY == whole)
    for win in (BrickWindow(0, 57, 3500, 3600), BrickWindow(1234, 1561, 49, 51)):
        part = bricks.window(row, win, "gz")
        assert np.array_equal(part[1], whole[win.y0 : win.y1, win.x0 : win.x1])
    assert whole.std() > 0


def test_service_and_brick_path_give_identical_stamps(
    server: SampleSkyServer, catalog: BrickCatalog, positions, tmp_path: Path
) -> None:
    ra, dec = positions["ra"], positions["dec"]
    assert len(plan_parts(catalog.index, ra[0], dec[0])) == 4  # the corner stamp: 4 bricks
    corners = stamp_corner_bricks(catalog, ra, dec, 152, BRICK_PIXSCALE_ARCSEC)
    assert len(set(corners[0])) == 4 and all(len(set(c)) == 1 for c in corners[1:])
    source = _source(server)
    cache = StorageLayout(str(tmp_path / "storage"))
    served = source.fetch_cutouts(ra, dec, cache, concurrency=4, policy=POLICY)
    cut = cutouts_from_bricks(source, catalog, ra, dec, cache, policy=POLICY)
    assert served.ok.all() and cut.batch.ok.all() and not cut.brick_failures()
    assert np.array_equal(served.images, cut.batch.images)
    assert np.all(served.images.std(axis=(2, 3)) > 0)  # sky noise (and sources) everywhere
    assert len(cut.fetched) == 12 and all(f.path.startswith(cache.root) for f in cut.fetched)
    # A cached brick is not requested again: the second cut reads the cache.
    again = cutouts_from_bricks(source, catalog, ra, dec, cache, policy=POLICY)
    assert all(f.from_cache for f in again.fetched)
    assert np.array_equal(again.batch.images, served.images)


def test_server_has_only_the_bricks_of_the_survey(
    server: SampleSkyServer, catalog: BrickCatalog, positions, tmp_path: Path
) -> None:
    # survey-bricks.fits.gz has the DR9 data model's columns and dtypes, every brick of the grid.
    path = legacysurvey_root(server.root) / layout.SURVEY_BRICKS_PATH
    table, header = fitsio.read(path, ext=1, header=True)
    tform = {"S8": "8A", ">i4": "J", ">i2": "I", ">f8": "D"}
    assert [
        (header[f"TTYPE{i + 1}"], header[f"TFORM{i + 1}"]) for i in range(header["TFIELDS"])
    ] == [(name, tform[dtype]) for name, dtype in SURVEY_BRICKS_COLUMNS.items()]
    assert len(table) == len(catalog.index) == len(brick_table()["RA"])
    row = int(positions["corner_bricks"][0])
    name = str(catalog.index.brickname[row])
    assert catalog.has_data(row) and name in catalog.available["south"]
    base = server.legacysurvey_root_url
    far = str(catalog.index.brickname[catalog.index.owners(np.array([10.0]), np.array([-30.0]))[0]])
    for relpath in (
        layout.brick_image_path("north", name, "g"),  # the brick lies in the south
        layout.brick_image_path("south", far, "g"),  # far outside the footprint
    ):
        assert requests.head(base + relpath, timeout=30).status_code == 404, relpath
    # A stamp on sky the survey lacks is zeros by both paths.
    ra, dec = np.array([10.0]), np.array([-30.0])
    source, cache = _source(server), StorageLayout(str(tmp_path))
    served = source.fetch_cutouts(ra, dec, cache, policy=POLICY)
    cut = cutouts_from_bricks(source, catalog, ra, dec, cache, policy=POLICY)
    assert cut.batch.ok.all() and not cut.fetched and cut.batch.no_data_bands.all()
    assert np.array_equal(served.images, cut.batch.images)


def test_local_mirror_is_read_in_place(
    server: SampleSkyServer, sky: Path, positions, tmp_path: Path
) -> None:
    ra, dec = positions["ra"], positions["dec"]
    cache = StorageLayout(str(tmp_path / "storage"))
    served = _source(server).fetch_cutouts(ra, dec, cache, policy=POLICY)
    mirror = legacysurvey_root(sky)  # holds the bricks the previous test had drawn
    for root in (str(mirror), f"file://{mirror}"):
        source = _source(server, root)
        catalog = fetch_brick_catalog(root, cache)
        cut = cutouts_from_bricks(source, catalog, ra, dec, cache)
        assert np.array_equal(cut.batch.images, served.images[:, :, :, :])
        assert all(f.path.startswith(str(mirror)) for f in cut.fetched)
    assert not (tmp_path / "storage" / "raw" / "legacysurvey" / "dr9" / "south").exists()
    # A brick missing from the mirror fails the stamps that need it, with the reason.
    partial = tmp_path / "mirror"
    for path in mirror.rglob("*.fits*"):
        target = partial / path.relative_to(mirror)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    missing = next(partial.rglob("*-image-g.fits.fz"))
    missing.unlink()
    cut = cutouts_from_bricks(
        _source(server, str(partial)), fetch_brick_catalog(str(partial), cache), ra, dec, cache
    )
    failed = cut.brick_failures()
    assert [f.key for f in failed] == [str(missing.relative_to(partial))]
    assert "not in the brick mirror" in failed[0].reason
    assert not cut.batch.ok[0] and "not in the brick mirror" in cut.batch.reasons[0]


def test_corrupt_brick_is_fetched_again_once_then_recorded(
    server: SampleSkyServer, catalog: BrickCatalog, positions, tmp_path: Path
) -> None:
    ra, dec = positions["ra"], positions["dec"]
    bad = catalog.file(int(positions["corner_bricks"][1]), "r")
    target = f"/{layout.SAMPLESKY_LEGACYSURVEY_PREFIX}{bad.relpath}"
    config = FaultConfig(fraction=0.0, always_corrupt=frozenset({target}))
    with FaultServer(proxy_backend(server.base_url), config) as faults:
        source = LegacySurveySource(
            root_url=faults.url + layout.SAMPLESKY_LEGACYSURVEY_PREFIX,
            cutout_url=server.cutout_url,
        )
        cache = StorageLayout(str(tmp_path / "storage"))
        cut = cutouts_from_bricks(source, catalog, ra, dec, cache, policy=POLICY)
        assert faults.requests_for(target) == 1 + POLICY.corrupt_refetches == 2
    failed = cut.brick_failures()
    assert [(f.kind, f.key, f.attempts) for f in failed] == [("brick", bad.relpath, 2)]
    assert "corrupt after 2 downloads" in failed[0].reason
    needs_bad = [
        int(positions["corner_bricks"][1]) in plan_parts(catalog.index, r, d)
        for r, d in zip(ra, dec, strict=True)
    ]
    assert list(~cut.batch.ok) == needs_bad and any(needs_bad) and not all(needs_bad)
    assert all(bad.relpath in cut.batch.reasons[i] for i in np.flatnonzero(needs_bad))


def test_partition_step_bricks_and_service_write_identical_cutouts(
    server: SampleSkyServer, positions, tmp_path: Path
) -> None:
    ra, dec = positions["ra"], positions["dec"]
    matches = pa.table(
        {"targetid": pa.array(np.arange(len(ra)) + 1000, pa.int64()), "ra": ra, "dec": dec}
    )
    tables, metadata = {}, {}
    for mode in ("service", "bricks", "auto"):
        cache = StorageLayout(str(tmp_path / mode))
        write_interim(cache, "matches", "edr", PIXEL, matches)
        result = fetch_partition_cutouts(
            _source(server), cache, "edr", PIXEL, concurrency=4, policy=POLICY, imaging=mode
        )
        tables[mode] = read_interim(cache, "cutouts", "edr", PIXEL)
        metadata[mode] = result.metadata
        assert read_failures(cache, "bricks", "edr", PIXEL).num_rows == 0
        if mode == "bricks":
            # The brick images are the partition's own raw files: `evict` deletes them.
            bricks = list(Path(cache.raw_dir()).rglob("*-image-*.fits.fz"))
            assert len(bricks) == 3 * metadata[mode]["imaging_bricks"] > 0
            n_removed, _ = evict_partition(cache, "edr", PIXEL, ("cutouts",))
            assert n_removed == len(bricks)
            assert not list(Path(cache.raw_dir()).rglob("*-image-*.fits.fz"))
    assert tables["bricks"].num_rows == len(ra)
    assert tables["bricks"].equals(tables["service"])
    assert [metadata[m]["imaging"] for m in ("service", "bricks", "auto")] == [
        "service", "bricks", "service",
    ]  # fmt: skip
    # Four bricks for four targets: the cutout service is cheaper.
    assert metadata["auto"]["imaging_bricks"] == 4
    assert (
        metadata["auto"]["imaging_service_s_estimate"]
        < metadata["auto"]["imaging_bricks_s_estimate"]
    )


def test_cost_rule_keeps_the_default_sky_on_the_service_and_dense_skies_on_bricks() -> None:
    # The default sky's edr partition: its targets over the bricks of one nside-16 pixel.
    cfg = SIZE_PRESETS["default"]
    n_targets = int(cfg.galaxies_per_pixel * cfg.footprint("edr").target_fraction)
    bricks = brick_table()
    n_bricks = int(np.sum(pixels_of(bricks["RA"], bricks["DEC"]) == PIXEL))
    cost = ImagingCost()
    assert choose_imaging("auto", n_targets, n_bricks, 3, cost).mode == "service"
    # EDR's SV3 rosettes hold ~100 targets per brick: bricks are far cheaper there.
    dense = choose_imaging("auto", 100 * n_bricks, n_bricks, 3, cost)
    assert dense.mode == "bricks" and dense.bricks_s < dense.service_s / 10
    assert choose_imaging("bricks", n_targets, n_bricks, 3, cost).mode == "bricks"
    assert choose_imaging("service", 100 * n_bricks, n_bricks, 3, cost).mode == "service"
    # A local mirror has no request latency: bricks win at a lower density.
    local = ImagingCost.for_root("/global/cfs/cdirs/cosmo/data/legacysurvey/dr9")
    assert local.bricks_s(n_bricks, 3) < cost.bricks_s(n_bricks, 3)
    with pytest.raises(ValueError, match="imaging='fast'"):
        choose_imaging("fast", 1, 1, 3, cost)
