"""list_releases over Apache-style listings, Python's http.server, and a local folder."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from astroclip_core.releases import Release
from astroclip_core.sources.faults import FaultConfig, FaultServer, static_backend
from astroclip_core.sources.http import FetchError
from astroclip_core.sources.releases_index import list_releases, listing_subfolders

EXPECTED = [Release("dr1", "iron"), Release("edr", "fuji")]

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
    """A public root with two releases and entries that are not releases."""
    public = root / "public"
    for rel in ("edr/spectro/redux/fuji/healpix", "dr1/spectro/redux/iron/zcatalog"):
        (public / rel).mkdir(parents=True)
    (public / "papers" / "2023").mkdir(parents=True)
    (public / "Upper" / "spectro" / "redux" / "x").mkdir(parents=True)
    (public / "notes.txt").write_text("a file, not a release")
    (public / "edr" / "spectro" / "redux" / "README").write_text("not a specprod")
    return public


def test_listing_parser_keeps_only_direct_subfolders() -> None:
    names = listing_subfolders(APACHE_PAGE, "http://data.desi.lbl.gov/public/")
    assert names == ["dr1", "edr", "papers"]


def test_list_releases_over_apache_style_listing(tmp_path: Path) -> None:
    _desi_tree(tmp_path)
    with FaultServer(static_backend(tmp_path), FaultConfig(fraction=0.0)) as server:
        releases = list_releases(server.url + "public")
        # the root, then one listing per lower-case folder: edr, dr1, papers
        assert server.request_count == 4
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


def test_list_releases_over_python_http_server(python_http_server: str) -> None:
    assert list_releases(python_http_server + "public/") == EXPECTED


def test_list_releases_over_local_folder(tmp_path: Path) -> None:
    public = _desi_tree(tmp_path)
    assert list_releases(str(public)) == EXPECTED


def test_missing_root_raises_naming_it(tmp_path: Path) -> None:
    server = FaultServer(static_backend(tmp_path), FaultConfig(fraction=0.0))
    with server, pytest.raises(FetchError, match="nowhere/"):
        list_releases(server.url + "nowhere/")
