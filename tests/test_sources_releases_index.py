"""discover_releases over Apache-style listings, Python's http.server, and a local folder."""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from astroclip_core.releases import Release, choose_production, discover_releases
from astroclip_core.samplesky.config import preset
from astroclip_core.samplesky.generate import desi_root, generate
from astroclip_core.samplesky.server import serve_sample_sky
from astroclip_core.sources import layout
from astroclip_core.sources.faults import FaultConfig, FaultServer, static_backend
from astroclip_core.sources.http import FetchError
from astroclip_core.sources.releases_index import listing_files, listing_subfolders

# edr's catalogue is flat, dr1's in v1, dr2's newest in v2 (v1 holds an older one, v3 none);
# dr2 has two productions and takes the one whose zcatalog holds a zall-pix file; dr3 has none.
EXPECTED = [
    Release("dr1", "iron", "zcatalog/v1"),
    Release("dr2", "loa", "zcatalog/v2"),
    Release("edr", "fuji", "zcatalog"),
]

# Trimmed from an Apache 2.4 autoindex page (the format data.desi.lbl.gov serves).
APACHE_PAGE = """<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">
<html><head><title>Index of /public</title></head><body><h1>Index of /public</h1>
<table><tr><th><a href="?C=N;O=D">Name</a></th><th><a href="?C=M;O=A">Last modified</a></th></tr>
<tr><td><a href="/">Parent Directory</a></td></tr>
<tr><td><a href="dr1/">dr1/</a></td><td>2025-03-19 09:00</td></tr>
<tr><td><a href="/public/edr/">edr/</a></td><td>2023-06-13 10:00</td></tr>
<tr><td><a href="http://data.desi.lbl.gov/public/papers/">papers/</a></td></tr>
<tr><td><a href="README.html">README.html</a></td></tr>
<tr><td><a href="../">up</a></td></tr>
<tr><td><a href="https://elsewhere.org/public/x/">x/</a></td></tr>
<tr><td><a href="dr1/spectro/">deeper</a></td></tr>
</table></body></html>"""


def _desi_tree(root: Path) -> Path:
    """A public root with three releases and entries that are not (yet) releases."""
    public = root / "public"
    for rel in (
        "edr/spectro/redux/fuji/healpix",
        "dr2/spectro/redux/loa_early/healpix",
        "dr3/spectro/redux/kibo/healpix",
    ):
        (public / rel).mkdir(parents=True)
    for rel in (
        "edr/spectro/redux/fuji/zcatalog/zall-pix-fuji.fits",
        "dr1/spectro/redux/iron/zcatalog/v1/zall-pix-iron.fits",
        "dr2/spectro/redux/loa/zcatalog/v1/zall-pix-loa.fits",
        "dr2/spectro/redux/loa/zcatalog/v2/zall-pix-loa.fits",
        "dr2/spectro/redux/loa/zcatalog/v3/zpix-main-dark.fits",  # v3 has no zall-pix yet
        "dr2/spectro/redux/loa_early/zcatalog/zpix-sv3-dark.fits",  # nor this production
        "dr3/spectro/redux/kibo/zcatalog/v1/zall-pix-iron.fits",  # another production's file
    ):
        (public / rel).parent.mkdir(parents=True, exist_ok=True)
        (public / rel).write_bytes(b"x")
    (public / "papers" / "2023").mkdir(parents=True)
    (public / "Upper" / "spectro" / "redux" / "x").mkdir(parents=True)
    (public / "notes.txt").write_text("a file, not a release")
    (public / "edr" / "spectro" / "redux" / "README").write_text("not a specprod")
    return public


def test_listing_parser_keeps_only_direct_subfolders() -> None:
    names = listing_subfolders(APACHE_PAGE, "http://data.desi.lbl.gov/public/")
    assert names == ["dr1", "edr", "papers"]


def test_listing_parser_keeps_only_direct_files() -> None:
    assert listing_files(APACHE_PAGE, "http://data.desi.lbl.gov/public/") == ["README.html"]


def test_discover_releases_over_apache_style_listing(tmp_path: Path) -> None:
    _desi_tree(tmp_path)
    with FaultServer(static_backend(tmp_path), FaultConfig(fraction=0.0)) as server:
        releases = discover_releases(server.url + "public")
        # the root; spectro/redux/ of dr1, dr2, dr3, edr, papers; the 5 production folders;
        # the 5 zcatalog/ folders; then v1 of iron and kibo, and v3 and v2 of loa
        assert server.request_count == 1 + 5 + 5 + 5 + 4
    assert releases == EXPECTED


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def python_http_server(tmp_path: Path) -> Iterator[str]:
    _desi_tree(tmp_path)
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_discover_releases_over_python_http_server(python_http_server: str) -> None:
    assert discover_releases(python_http_server + "public/") == EXPECTED


def test_discover_releases_over_local_folder(tmp_path: Path) -> None:
    public = _desi_tree(tmp_path)
    assert discover_releases(str(public)) == EXPECTED


def test_discover_releases_over_the_sample_sky_server(tmp_path: Path) -> None:
    generate(tmp_path, preset("tiny", galaxies_per_pixel=15), ["edr", "dr1"])
    public = desi_root(tmp_path)
    # dr1's catalogue gets a second version beside its v1; edr's stays flat
    v1 = public / layout.zcatalog_path(Release("dr1", "iron", "zcatalog/v1"))
    v2 = public / layout.zcatalog_path(Release("dr1", "iron", "zcatalog/v2"))
    v2.parent.mkdir()
    shutil.copyfile(v1, v2)
    with serve_sample_sky(tmp_path) as server:
        found = discover_releases(server.desi_root_url)
    assert found == [Release("dr1", "iron", "zcatalog/v2"), Release("edr", "fuji", "zcatalog")]
    assert all((public / layout.zcatalog_path(r)).is_file() for r in found)


def test_several_productions_with_a_zcatalog_raise_naming_them(tmp_path: Path) -> None:
    public = _desi_tree(tmp_path)
    (public / "dr2/spectro/redux/loa_early/zcatalog/zall-pix-loa_early.fits").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"release 'dr2' has several productions .*loa, loa_early"):
        discover_releases(str(public))
    # a pinned production settles it, with its own zcatalog folder
    pinned = discover_releases(str(public), specprods={"dr2": "loa_early"})
    assert pinned[1] == Release("dr2", "loa_early", "zcatalog")


def test_a_pinned_production_without_a_zcatalog_is_not_listed(tmp_path: Path) -> None:
    public = _desi_tree(tmp_path)
    found = discover_releases(str(public), specprods={"dr2": "loa_early", "dr1": "nosuch"})
    assert found == [EXPECTED[2]]


def test_a_release_names_where_its_zcatalog_lies() -> None:
    assert Release("edr", "fuji").zcatalog_dir == "zcatalog"  # the default: the flat layout
    dr9 = Release("dr9", "abc", "zcatalog/v12")
    assert layout.zcatalog_path(dr9) == "dr9/spectro/redux/abc/zcatalog/v12/zall-pix-abc.fits"
    assert layout.zpix_path(dr9, "main", "dark") == (
        "dr9/spectro/redux/abc/zcatalog/v12/zpix-main-dark.fits"
    )
    for bad in ("zcatalog/", "zcatalog/v1/", "/zcatalog", "zcatalog/vx", "../zcatalog", ""):
        with pytest.raises(ValueError, match=rf"'dr9': zcatalog_dir {bad!r} must be"):
            Release("dr9", "abc", bad)


def test_choose_production_takes_the_one_with_a_zcatalog() -> None:
    assert choose_production("dr2", {"loa_early": False, "loa": True}) == "loa"
    assert choose_production("dr3", {"kibo": False}) is None


def test_missing_root_raises_naming_it(tmp_path: Path) -> None:
    server = FaultServer(static_backend(tmp_path), FaultConfig(fraction=0.0))
    with server, pytest.raises(FetchError, match="nowhere/"):
        discover_releases(server.url + "nowhere/")
