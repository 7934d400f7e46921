"""What a DESI public root lists: ``<root>/<release>/spectro/redux/<specprod>/[zcatalog/]``.

Over HTTP this reads Apache-style directory listings (``<a href="edr/">edr/</a>``; the real
data.desi.lbl.gov uses Apache autoindex, and the sample-sky server and Python's http.server
write the same links). Over ``s3://`` it lists prefixes with ``fs.ls``; any other fsspec folder
(a local sample-sky tree) is listed the same way. It makes one request for the root, one per
candidate release and one per production, with short timeouts, because the new-release sensor
calls it under a 60 s limit. Which production a release uses is decided from these listings by
:func:`astroclip_core.releases.discover_releases`; this module knows no release names.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import unquote, urljoin, urlsplit

import fsspec

from astroclip_core import fsio
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
ZCATALOG_FOLDER = "zcatalog"


class _HrefParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(v for k, v in attrs if k == "href" and v)


def _hrefs(html: str) -> list[str]:
    parser = _HrefParser()
    parser.feed(html)
    return parser.hrefs


def listing_subfolders(html: str, base_url: str) -> list[str]:
    """Names of the direct subfolders linked from a directory listing page at ``base_url``.

    Only links that resolve to ``<base_url><name>/`` count, so parent links (``../``), sort
    links (``?C=N;O=D``), files and links elsewhere are ignored.
    """
    base = base_url if base_url.endswith("/") else base_url + "/"
    base_parts = urlsplit(base)
    names = []
    for href in _hrefs(html):
        target = urlsplit(urljoin(base, href))
        elsewhere = target.netloc != base_parts.netloc
        if elsewhere or target.query or not target.path.startswith(base_parts.path):
            continue
        rest = unquote(target.path[len(base_parts.path) :])
        if rest.endswith("/") and rest.count("/") == 1 and rest != "/":
            names.append(rest[:-1])
    return sorted(set(names))


def _http_subfolders(url: str, policy: RetryPolicy) -> list[str] | None:
    """Subfolders of one HTTP folder; None when the folder does not exist (404).

    A page without a single link is not a directory listing but an error page served with
    status 200 (by a proxy, or a server in trouble), so it is asked for again, up to
    ``policy.max_attempts`` times, before the folder is taken to be empty.
    """
    page = ""
    for _ in range(policy.max_attempts):
        try:
            body, _ = http_get_bytes(url, policy, clock=RetryClock())
        except FetchError as err:
            if err.status == 404:
                return None
            raise
        page = body.decode("utf-8", errors="replace")
        if _hrefs(page):
            break
        log.warning("%s: the answer holds no links, so it is no listing; asking again", url)
    return listing_subfolders(page, url)


def _fs_subfolders(fs: fsspec.AbstractFileSystem, path: str) -> list[str] | None:
    """Subfolders of one fsspec folder; None when it does not exist."""
    try:
        entries = fs.ls(path.rstrip("/"), detail=True, refresh=True)
    except FileNotFoundError:
        return None
    return sorted(
        e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory"
    )


@dataclass(frozen=True, order=True)
class ProductionListing:
    """One ``<release>/spectro/redux/<specprod>/`` folder, and whether it holds ``zcatalog/``."""

    release: str
    specprod: str
    has_zcatalog: bool


def _list(root: str, subfolders: Callable[[str], list[str] | None]) -> list[ProductionListing]:
    """Productions under ``root`` given a function listing the subfolders of a folder."""
    names = subfolders(root)
    if names is None:
        raise FetchError(root, "release root not found")
    names = [n for n in names if _NAME_RE.match(n)]
    # the listings of one level are independent: overlap their latencies
    with ThreadPoolExecutor(max_workers=4) as pool:
        redux = [f"{root}{name}/{REDUX_SUBPATH}" for name in names]
        prods = list(pool.map(subfolders, redux))
        pairs = [
            (name, prod)
            for name, found in zip(names, prods, strict=True)
            for prod in found or []
            if _NAME_RE.match(prod)
        ]
        folders = [f"{root}{name}/{REDUX_SUBPATH}{prod}/" for name, prod in pairs]
        contents = list(pool.map(subfolders, folders))
    return [
        ProductionListing(name, prod, ZCATALOG_FOLDER in (entries or []))
        for (name, prod), entries in zip(pairs, contents, strict=True)
    ]


def list_productions(
    desi_root_url: str, policy: RetryPolicy = INDEX_POLICY, s3_endpoint_url: str | None = None
) -> list[ProductionListing]:
    """Every ``<release>/spectro/redux/<specprod>/`` folder under a DESI public root, sorted.

    A folder at the root is a candidate release when it has ``spectro/redux/<specprod>/``
    subfolders; other entries (files, ``../``, folders without that path, names that are not
    lower-case identifiers) are ignored. ``desi_root_url`` is an http(s):// URL,
    ``s3://bucket/prefix/`` (anonymous; ``s3_endpoint_url`` picks a custom endpoint) or any
    other fsspec folder (a local sample-sky tree). Raises :class:`FetchError` when the root
    itself cannot be read.
    """
    root = desi_root_url if desi_root_url.endswith("/") else desi_root_url + "/"
    if root.startswith(("http://", "https://")):
        found = _list(root, lambda url: _http_subfolders(url, policy))
    else:
        if root.startswith("s3://"):
            fs, path = s3_filesystem(s3_endpoint_url, policy), root[len("s3://") :]
        else:
            fs, path = fsio.filesystem(root)
            path = path.rstrip("/") + "/"
        found = _list(path, lambda p: _fs_subfolders(fs, p))
    log.info("found %d productions under %s", len(found), root)
    return sorted(found)
