"""Which DESI releases a public root offers: ``<root>/<release>/spectro/redux/<specprod>/``.

Over HTTP this reads Apache-style directory listings (``<a href="edr/">edr/</a>``; the real
data.desi.lbl.gov uses Apache autoindex, and the sample-sky server and Python's http.server
write the same links). Over ``s3://`` it lists prefixes with ``fs.ls``. It makes one request
for the root and one per candidate release, with short timeouts, because the new-release
sensor calls it under a 60 s limit.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from urllib.parse import unquote, urljoin, urlsplit

import fsspec

from astroclip_core import fsio
from astroclip_core.releases import Release
from astroclip_core.sources.fetch import s3_filesystem
from astroclip_core.sources.http import FetchError, RetryClock, RetryPolicy, http_get_bytes

log = logging.getLogger(__name__)

# Short timeouts and one retry: a sensor tick must finish well inside its 60 s budget.
INDEX_POLICY = RetryPolicy(
    max_attempts=2, backoff_base_s=0.2, backoff_max_s=1.0, retry_after_max_s=2.0,
    connect_timeout_s=3.0, read_timeout_s=5.0,
)  # fmt: skip
_NAME_RE = re.compile(r"^[a-z0-9_]+$")
REDUX_SUBPATH = "spectro/redux/"


class _HrefParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(v for k, v in attrs if k == "href" and v)


def listing_subfolders(html: str, base_url: str) -> list[str]:
    """Names of the direct subfolders linked from a directory listing page at ``base_url``.

    Only links that resolve to ``<base_url><name>/`` count, so parent links (``../``), sort
    links (``?C=N;O=D``), files and links elsewhere are ignored.
    """
    parser = _HrefParser()
    parser.feed(html)
    base = base_url if base_url.endswith("/") else base_url + "/"
    base_parts = urlsplit(base)
    names = []
    for href in parser.hrefs:
        target = urlsplit(urljoin(base, href))
        elsewhere = target.netloc != base_parts.netloc
        if elsewhere or target.query or not target.path.startswith(base_parts.path):
            continue
        rest = unquote(target.path[len(base_parts.path) :])
        if rest.endswith("/") and rest.count("/") == 1 and rest != "/":
            names.append(rest[:-1])
    return sorted(set(names))


def _http_subfolders(url: str, policy: RetryPolicy) -> list[str] | None:
    """Subfolders of one HTTP folder; None when the folder does not exist (404)."""
    try:
        body, _ = http_get_bytes(url, policy, clock=RetryClock())
    except FetchError as err:
        if err.status == 404:
            return None
        raise
    return listing_subfolders(body.decode("utf-8", errors="replace"), url)


def _fs_subfolders(fs: fsspec.AbstractFileSystem, path: str) -> list[str] | None:
    """Subfolders of one fsspec folder; None when it does not exist."""
    try:
        entries = fs.ls(path.rstrip("/"), detail=True, refresh=True)
    except FileNotFoundError:
        return None
    return sorted(
        e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory"
    )


def _releases_of(name: str, specprods: list[str] | None) -> list[Release]:
    return [Release(name, p) for p in specprods or [] if _NAME_RE.match(p)]


def _list(root: str, subfolders: Callable[[str], list[str] | None]) -> list[Release]:
    """Releases under ``root`` given a function listing the subfolders of a folder."""
    names = subfolders(root)
    if names is None:
        raise FetchError(root, "release root not found")
    names = [n for n in names if _NAME_RE.match(n)]
    # the per-release listings are independent: overlap their latencies
    with ThreadPoolExecutor(max_workers=4) as pool:
        prods = list(pool.map(lambda n: subfolders(f"{root}{n}/{REDUX_SUBPATH}"), names))
    return [r for name, p in zip(names, prods, strict=True) for r in _releases_of(name, p)]


def list_releases(
    desi_root_url: str, policy: RetryPolicy = INDEX_POLICY, s3_endpoint_url: str | None = None
) -> list[Release]:
    """Every (release, specprod) under a DESI public root, sorted.

    A folder at the root counts as a release when it has ``spectro/redux/<specprod>/``
    subfolders; other entries (files, ``../``, folders without that path) are ignored.
    ``desi_root_url`` is an http(s):// URL, ``s3://bucket/prefix/`` (anonymous) or any other
    fsspec folder (a local sample-sky tree). Raises :class:`FetchError` when the root itself
    cannot be read.
    """
    root = desi_root_url if desi_root_url.endswith("/") else desi_root_url + "/"
    if root.startswith(("http://", "https://")):
        releases = _list(root, lambda url: _http_subfolders(url, policy))
    else:
        if root.startswith("s3://"):
            fs, path = s3_filesystem(s3_endpoint_url, policy), root[len("s3://") :]
        else:
            fs, path = fsio.filesystem(root)
            path = path.rstrip("/") + "/"
        releases = _list(path, lambda p: _fs_subfolders(fs, p))
    log.info("found %d releases under %s", len(releases), root)
    return sorted(releases)
