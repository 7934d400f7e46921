"""Coadd files drawn on request: byte for byte what eager generation writes, served and listed."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_samplesky_catalogue import tiny_sky_root

from astroclip_core.samplesky import lazy
from astroclip_core.samplesky.config import preset
from astroclip_core.samplesky.generate import coadd_index_path, desi_root, generate
from astroclip_core.samplesky.server import serve_sample_sky


@pytest.fixture(scope="module")
def eager_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny sky (both releases) with every coadd file written to disk, as before."""
    root = tmp_path_factory.mktemp("samplesky-eager")
    generate(root, preset("tiny"), coadd_files=True)
    return root


def _eager_coadds(root: Path) -> dict[str, bytes]:
    desi = desi_root(root)
    return {p.relative_to(desi).as_posix(): p.read_bytes() for p in desi.rglob("coadd-*.fits")}


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` except the coadds and the coadd index."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file()
        and not p.name.startswith("coadd-")
        and not p.name.startswith(".")
        and p.parent.name != "render"
    }


def test_lazy_sky_writes_no_coadd_and_the_same_other_files(
    eager_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    lazy_root = tiny_sky_root(tmp_path_factory)
    assert not list(desi_root(lazy_root).rglob("coadd-*.fits"))
    assert not coadd_index_path(eager_root, "edr").exists()
    assert _tree(lazy_root) == _tree(eager_root)
    assert lazy.coadd_relpaths(lazy_root) == sorted(_eager_coadds(eager_root))


def test_drawn_coadds_equal_eager_ones_byte_for_byte(
    eager_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    lazy_root = tiny_sky_root(tmp_path_factory)
    eager = _eager_coadds(eager_root)
    files = lazy.LazyCoadds(lazy_root)
    # In an order other than generation's: each file's noise is its own.
    for relpath in sorted(eager, reverse=True):
        body = files.body(desi_root(lazy_root).resolve() / relpath)
        assert body == eager[relpath], relpath


def test_server_serves_and_lists_drawn_coadds_like_files(
    eager_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    lazy_root = tiny_sky_root(tmp_path_factory)
    eager = _eager_coadds(eager_root)
    relpath = sorted(eager)[0]
    folder, _, name = relpath.rpartition("/")
    with serve_sample_sky(lazy_root) as lazy_srv, serve_sample_sky(eager_root) as eager_srv:
        with urllib.request.urlopen(lazy_srv.desi_root_url + relpath, timeout=30) as resp:
            assert resp.read() == eager[relpath]
            assert int(resp.headers["Content-Length"]) == len(eager[relpath])
        req = urllib.request.Request(
            lazy_srv.desi_root_url + relpath, headers={"Range": "bytes=2880-5759"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 206 and resp.read() == eager[relpath][2880:5760]
        listings = []
        for srv in (lazy_srv, eager_srv):
            with urllib.request.urlopen(srv.desi_root_url + folder + "/", timeout=30) as resp:
                listings.append(resp.read().decode())
    assert f'<a href="{name}">{name}</a> {len(eager[relpath])}' in listings[0]
    assert listings[0] == listings[1]


def test_a_drawn_file_that_differs_from_the_index_is_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "sky"
    generate(root, preset("tiny", galaxies_per_pixel=15), ["edr"])
    index = pq.read_table(coadd_index_path(root, "edr"))
    crc = index.column("crc32").to_pylist()
    crc[0] += 1
    column = index.schema.get_field_index("crc32")
    pq.write_table(
        index.set_column(column, "crc32", pa.array(crc, pa.int64())), coadd_index_path(root, "edr")
    )
    relpath = index.column("relpath")[0].as_py()
    with pytest.raises(lazy.RenderMismatchError, match="delete it to regenerate"):
        lazy.sky_file_bytes(root, relpath)
    with pytest.raises(FileNotFoundError, match="not in the sample sky"):
        lazy.sky_file_bytes(root, relpath.replace("coadd-", "coadd-x"))
    with serve_sample_sky(root) as srv, pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(srv.desi_root_url + relpath, timeout=30)
    assert err.value.code == 500 and b"delete it to regenerate" in err.value.read()


def test_without_its_saved_state_a_pixel_is_drawn_again(tmp_path: Path) -> None:
    cfg = preset("tiny", galaxies_per_pixel=15)
    generate(tmp_path / "eager", cfg, ["edr"], coadd_files=True)
    generate(tmp_path / "lazy", cfg, ["edr"])
    states = sorted((tmp_path / "lazy" / "render").glob("state-edr-*.npz"))
    assert len(states) == len(cfg.footprint("edr").pixels)
    for state in states:
        state.unlink()
    files = lazy.LazyCoadds(tmp_path / "lazy")
    eager = _eager_coadds(tmp_path / "eager")
    for relpath, body in eager.items():
        assert files.body(desi_root(tmp_path / "lazy").resolve() / relpath) == body, relpath
