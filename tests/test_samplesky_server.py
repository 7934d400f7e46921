"""The sample-sky loopback server: static files, listings, ranges and the cutout service."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_samplesky_catalogue import tiny_sky_root

from astroclip_core.formats.legacysurvey import read_cutout
from astroclip_core.releases import KNOWN_RELEASES
from astroclip_core.samplesky.cutouts import CutoutRenderer, CutoutRequest
from astroclip_core.samplesky.generate import truth_path
from astroclip_core.samplesky.render_worker import RENDER_PROCESSES_ENV, default_render_processes
from astroclip_core.samplesky.server import SampleSkyServer, serve_sample_sky
from astroclip_core.sources import layout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SampleSkyServer]:
    """A running server over the tiny sky."""
    with serve_sample_sky(tiny_sky_root(tmp_path_factory)) as srv:
        yield srv


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_urls_follow_the_layout(server: SampleSkyServer) -> None:
    assert server.base_url.startswith("http://127.0.0.1:")
    assert server.desi_root_url == server.base_url + "public/"
    assert server.legacysurvey_root_url.endswith("/cfs/cosmo/data/legacysurvey/dr9/")
    assert server.cutout_url.endswith("/viewer/fits-cutout")


def test_static_file_bytes_and_ranges(server: SampleSkyServer) -> None:
    rel = KNOWN_RELEASES["edr"]
    relpath = layout.zcatalog_path(rel)
    disk = (server.root / "public" / relpath).read_bytes()
    status, headers, body = _get(server.desi_root_url + relpath)
    assert status == 200 and body == disk and int(headers["Content-Length"]) == len(disk)
    status, headers, body = _get(server.desi_root_url + relpath, {"Range": "bytes=100-2979"})
    assert status == 206 and body == disk[100:2980]
    assert headers["Content-Range"] == f"bytes 100-2979/{len(disk)}"
    status, _, body = _get(server.desi_root_url + relpath, {"Range": "bytes=-80"})
    assert status == 206 and body == disk[-80:]
    status, _, _ = _get(server.desi_root_url + relpath, {"Range": f"bytes={len(disk)}-"})
    assert status == 416
    status, _, _ = _get(server.desi_root_url + "edr/nothing-here.fits")
    assert status == 404


def test_directory_listing_links_releases(server: SampleSkyServer) -> None:
    status, headers, body = _get(server.desi_root_url)
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert '<a href="edr/">edr/</a>' in text and '<a href="dr1/">dr1/</a>' in text
    status, _, body = _get(server.legacysurvey_root_url + "south/sweep/9.0/")
    assert status == 200 and b"sweep-150p000-160p005.fits" in body


def test_cutout_is_deterministic_and_shows_the_galaxy(server: SampleSkyServer) -> None:
    truth = pq.read_table(truth_path(server.root, "edr")).to_pydict()
    i = next(
        k
        for k, (kind, ra) in enumerate(zip(truth["kind"], truth["ls_ra"], strict=True))
        if kind == "galaxy" and ra
    )
    query = layout.cutout_query(truth["ls_ra"][i], truth["ls_dec"][i], size_pix=64)
    status, headers, first = _get(f"{server.cutout_url}?{query}")
    assert status == 200 and int(headers["Content-Length"]) == len(first)
    _, _, second = _get(f"{server.cutout_url}?{query}")
    assert first == second
    image = read_cutout(first)
    assert image.shape == (3, 64, 64)
    centre = image[:, 28:36, 28:36].sum(axis=(1, 2))
    corner = image[:, :8, :8].sum(axis=(1, 2))
    assert np.all(centre > corner)


def test_cutout_without_coverage_is_zero(server: SampleSkyServer) -> None:
    status, _, body = _get(f"{server.cutout_url}?{layout.cutout_query(10.0, -40.0, size_pix=32)}")
    assert status == 200
    assert not read_cutout(body).any()


@pytest.mark.parametrize(
    "query",
    [
        "ra=150&dec=2&layer=ls-dr9&pixscale=0.262&bands=grz&size=513",
        "ra=150&dec=2&layer=ls-dr8&pixscale=0.262&bands=grz&size=64",
        "ra=150&dec=2&layer=ls-dr9&pixscale=0&bands=grz&size=64",
        "ra=150&dec=2&layer=ls-dr9&pixscale=0.262&bands=gri&size=64",
        "ra=150&dec=2&layer=ls-dr9&pixscale=0.262&bands=grz&size=abc",
        "dec=2&layer=ls-dr9&pixscale=0.262&bands=grz&size=64",
    ],
)
def test_cutout_rejects_bad_parameters(server: SampleSkyServer, query: str) -> None:
    status, _, body = _get(f"{server.cutout_url}?{query}")
    assert status == 400 and b"bad cutout request" in body


def test_noise_does_not_depend_on_sources(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tiny_sky_root(tmp_path_factory)
    renderer = CutoutRenderer(root)
    truth = pq.read_table(truth_path(root, "edr")).to_pydict()
    i = next(k for k, ra in enumerate(truth["ls_ra"]) if ra)
    req = CutoutRequest(truth["ls_ra"][i], truth["ls_dec"][i], size_pix=48)
    noisy, clean = renderer.render(req), renderer.render(req, noise=False)
    residual = noisy - clean
    elsewhere = CutoutRequest(truth["ls_ra"][i], truth["ls_dec"][i] + 0.02, size_pix=48)
    other = renderer.render(elsewhere) - renderer.render(elsewhere, noise=False)
    assert clean.any() and residual.std() > 0 and other.std() > 0
    # Same brick, same depth: the noise level is the same with or without a galaxy.
    np.testing.assert_allclose(residual.std(axis=(1, 2)), other.std(axis=(1, 2)), rtol=0.3)


def test_server_rejects_a_folder_without_sky(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="samplesky.json"):
        SampleSkyServer(tmp_path).start()


def test_catalogue_fluxes_scatter_by_their_ivar_and_stamps_use_true_fluxes(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tiny_sky_root(tmp_path_factory)
    renderer = CutoutRenderer(root)
    cat, _ = renderer._load()
    truth = pq.read_table(truth_path(root, "edr")).to_pydict()
    row_of = {
        (int(b), int(o)): i
        for i, (b, o) in enumerate(zip(cat["brickid"], cat["objid"], strict=True))
    }
    pairs = [
        (row_of[(b, o)], k)
        for k, (b, o) in enumerate(zip(truth["brickid"], truth["objid"], strict=True))
        if b is not None and (int(b), int(o)) in row_of
    ]
    assert len(pairs) > 50  # 3 x len(pairs) pulls
    rows = np.array([r for r, _ in pairs])
    true = np.array([[truth[f"flux_{b}"][k] for b in "grz"] for _, k in pairs])
    measured = np.column_stack([cat[f"flux_{b}"][rows] for b in "grz"])
    ivar = np.column_stack([cat[f"flux_ivar_{b}"][rows] for b in "grz"])
    # The catalogue is a measurement: pulls are standard normal, not zero.
    pull = (measured - true) * np.sqrt(ivar)
    assert abs(pull.mean()) < 0.25 and 0.8 < pull.std() < 1.2
    # The renderer removes that draw again, so stamps show each source at its true flux.
    np.testing.assert_allclose(renderer.true_flux(rows), true, rtol=1e-4, atol=1e-4)


def test_stamps_show_red_bulges_in_bluer_discs(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tiny_sky_root(tmp_path_factory)
    renderer = CutoutRenderer(root)
    cat, _ = renderer._load()
    true = renderer.true_flux(np.arange(cat["ra"].size))
    bt = cat["bulge_flux"][:, 1] / np.maximum(true[:, 1], 1e-9)
    picked = np.flatnonzero((bt > 0.3) & (bt < 0.9) & (cat["shape_r"] > 1.0) & (true[:, 1] > 3))
    assert picked.size >= 3 and (cat["bulge_r"] > 0).sum() > 0.5 * (cat["type"] != "PSF").sum()
    yy, xx = np.mgrid[:64, :64] - 31.5
    radius_pix = np.hypot(yy, xx)
    core, ring = radius_pix < 2.5, (radius_pix > 5) & (radius_pix < 10)

    def gradients() -> np.ndarray:
        """(3,) core minus ring g-r colour of the picked sources' noiseless stamps."""
        out = []
        for i in picked[:3]:
            req = CutoutRequest(float(cat["ra"][i]), float(cat["dec"][i]), size_pix=64, bands="gr")
            g, r = renderer.render(req, noise=False).astype(np.float64)
            core_gr, ring_gr = (-2.5 * np.log10(g[m].sum() / r[m].sum()) for m in (core, ring))
            out.append(core_gr - ring_gr)
        return np.array(out)

    with_bulges = gradients()
    cat["bulge_flux"][:] = 0.0  # the same sources as single profiles (PSF colour terms only)
    cat["bulge_r"][:] = 0.0
    single = gradients()
    # The bulge is old and the disc holds the young stars: the core is redder in g-r.
    assert np.all(with_bulges > single + 0.04), (with_bulges, single)


def _galaxy_queries(root: Path, n: int) -> list[str]:
    truth = pq.read_table(truth_path(root, "edr")).to_pydict()
    rows = [k for k, ra in enumerate(truth["ls_ra"]) if ra][:n]
    return [layout.cutout_query(truth["ls_ra"][k], truth["ls_dec"][k], size_pix=40) for k in rows]


def test_worker_processes_draw_the_same_bytes(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The pool of render processes returns what the request threads draw, byte for byte."""
    root = tiny_sky_root(tmp_path_factory)
    queries = _galaxy_queries(root, 6)
    with serve_sample_sky(root, render_processes=1) as plain:
        expected = [_get(f"{plain.cutout_url}?{q}")[2] for q in queries]
    with serve_sample_sky(root, render_processes=2) as pooled:
        with ThreadPoolExecutor(4) as ex:
            got = list(ex.map(lambda q: _get(f"{pooled.cutout_url}?{q}"), queries))
        workers = list(pooled._httpd.pool._idle.queue)  # type: ignore[union-attr]
    assert [status for status, _, _ in got] == [200] * len(queries)
    assert [body for _, _, body in got] == expected
    # both workers were used, and stop() ended them
    assert 1 <= len(workers) <= 2 and all(w.proc.poll() is not None for w in workers)


def test_a_killed_render_worker_costs_no_request(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tiny_sky_root(tmp_path_factory)
    first, second = _galaxy_queries(root, 2)
    with serve_sample_sky(root, render_processes=2) as srv:
        assert _get(f"{srv.cutout_url}?{first}")[0] == 200
        pool = srv._httpd.pool  # type: ignore[union-attr]
        (worker,) = list(pool._idle.queue)
        worker.proc.kill()
        worker.proc.wait()
        status, _, body = _get(f"{srv.cutout_url}?{second}")
        assert status == 200 and read_cutout(body).shape == (3, 40, 40)
        # the dead worker was dropped; the next request starts a fresh one
        assert _get(f"{srv.cutout_url}?{first}")[0] == 200
        assert all(w.proc.poll() is None for w in pool._idle.queue)


def test_render_processes_variable_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RENDER_PROCESSES_ENV, "3")
    assert default_render_processes() == 3
    monkeypatch.setenv(RENDER_PROCESSES_ENV, "two")
    with pytest.raises(ValueError, match="ASTROCLIP_SAMPLESKY_RENDER_PROCESSES='two'"):
        default_render_processes()


def test_requests_waiting_for_workers_that_die_are_still_served(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Both workers dead, then a burst of more requests than workers: every request is served
    (a dead worker is never given back; its slot is freed, and waiting requests poll for it)."""
    root = tiny_sky_root(tmp_path_factory)
    queries = _galaxy_queries(root, 6)
    with serve_sample_sky(root, render_processes=2) as srv:
        with ThreadPoolExecutor(2) as ex:  # two at once: both workers start
            assert [s for s, _, _ in ex.map(lambda q: _get(f"{srv.cutout_url}?{q}"), queries[:2])]
        pool = srv._httpd.pool  # type: ignore[union-attr]
        for worker in list(pool._idle.queue):
            worker.proc.kill()
            worker.proc.wait()
        with ThreadPoolExecutor(6) as ex:
            got = list(ex.map(lambda q: _get(f"{srv.cutout_url}?{q}"), queries))
    assert [status for status, _, _ in got] == [200] * len(queries)


def test_a_request_waiting_on_workers_that_die_takes_a_freed_slot(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Deterministic form of the burst above: both workers are held while a request waits for
    one; both then die. The waiting request must start a new worker, not wait forever."""
    import threading

    from astroclip_core.samplesky.render_worker import RenderPool

    root = tiny_sky_root(tmp_path_factory)
    truth = pq.read_table(truth_path(root, "edr")).to_pydict()
    k = next(i for i, ra in enumerate(truth["ls_ra"]) if ra)
    req = CutoutRequest(truth["ls_ra"][k], truth["ls_dec"][k], size_pix=32)
    renderer = CutoutRenderer(root)
    pool = RenderPool(Path(root), renderer, processes=2)
    try:
        held = [pool._take(), pool._take()]  # both slots busy
        out: list[np.ndarray] = []
        waiter = threading.Thread(target=lambda: out.append(pool.render(req)), daemon=True)
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive()  # it waits for a worker
        for worker in held:
            assert worker is not None
            worker.proc.kill()
            worker.proc.wait()
            pool._drop(worker)
        waiter.join(timeout=60)
        assert not waiter.is_alive() and len(out) == 1
        np.testing.assert_array_equal(out[0], renderer.render(req))
    finally:
        pool.close()
