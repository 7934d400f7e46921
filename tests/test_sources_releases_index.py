"""discover_releases over Apache-style listings, Python's http.server, and a local folder."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from astroclip_core.releases import Release, choose_production, discover_releases
from astroclip_core.sources.faults import FaultConfig, FaultServer, static_backend
from astroclip_core.sources.http import FetchError
from astroclip_core.sources.releases_index import listing_subfolders

# dr2 has two productions and takes the one with a zcatalog; dr3 has none with one yet.
EXPECTED = [Release("dr1", "iron"), Release("dr2", "loa"), Release("edr", "fuji")]

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
        "edr/spectro/redux/fuji/zcatalog",
        "dr1/spectro/redux/iron/zcatalog/v1",
        "dr2/spectro/redux/loa/zcatalog",
        "dr2/spectro/redux/loa_early/healpix",
        "dr3/spectro/redux/kibo/healpix",
    ):
        (public / rel).mkdir(parents=True)
    (public / "papers" / "2023").mkdir(parents=True)
    (public / "Upper" / "spectro" / "redux" / "x").mkdir(parents=True)
    (public / "notes.txt").write_text("a file, not a release")
    (public / "edr" / "spectro" / "redux" / "README").write_text("not a specprod")
    return public


def test_listing_parser_keeps_only_direct_subfolders() -> None:
    names = listing_subfolders(APACHE_PAGE, "http://data.desi.lbl.gov/public/")
    assert names == ["dr1", "edr", "papers"]


def test_discover_releases_over_apache_style_listing(tmp_path: Path) -> None:
    _desi_tree(tmp_path)
    with FaultServer(static_backend(tmp_path), FaultConfig(fraction=0.0)) as server:
        releases = discover_releases(server.url + "public")
        # the root; spectro/redux/ of dr1, dr2, dr3, edr, papers; then the 5 production folders
        assert server.request_count == 1 + 5 + 5
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


def test_several_productions_with_a_zcatalog_raise_naming_them(tmp_path: Path) -> None:
    public = _desi_tree(tmp_path)
    (public / "dr2" / "spectro" / "redux" / "loa_early" / "zcatalog").mkdir()
    with pytest.raises(ValueError, match=r"release 'dr2' has several productions .*loa, loa_early"):
        discover_releases(str(public))


def test_choose_production_takes_the_one_with_a_zcatalog() -> None:
    assert choose_production("dr2", {"loa_early": False, "loa": True}) == "loa"
    assert choose_production("dr3", {"kibo": False}) is None


def test_missing_root_raises_naming_it(tmp_path: Path) -> None:
    server = FaultServer(static_backend(tmp_path), FaultConfig(fraction=0.0))
    with server, pytest.raises(FetchError, match="nowhere/"):
        discover_releases(server.url + "nowhere/")
