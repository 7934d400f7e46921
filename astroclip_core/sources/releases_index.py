"""What a DESI public root lists: ``<root>/<release>/spectro/redux/<specprod>/zcatalog[/v<N>]/``.

Over HTTP this reads Apache-style directory listings (``<a href="edr/">edr/</a>``; the real
data.desi.lbl.gov uses Apache autoindex, and the sample-sky server and Python's http.server
write the same links). Over ``s3://`` it lists prefixes with ``fs.ls``; any other fsspec folder
(a local sample-sky tree) is listed the same way. It makes one request for the root, one per
candidate release, one per production, and one per ``zcatalog/`` folder (plus one per
``zcatalog/v<N>/`` folder looked into), with short timeouts, because the new-release sensor
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
from astroclip_core.releases import FLAT_ZCATALOG_DIR
from astroclip_core.sources import layout
from astroclip_core.sources.fetch import s3_filesystem
from astroclip_core.sources.http import FetchError, RetryClock, RetryPolicy, http_get_bytes

log = logging.getLogger(__name__)

# Short timeouts and one retry: a sensor tick must finish well inside its 60 s budget.
INDEX_POLICY = RetryPolicy(
    max_attempts=2, backoff_base_s=0.2, backoff_max_s=1.0, retry_after_max_s=2.0,
    connect_timeout_s=3.0, read_timeout_s=5.0,
)  # fmt: skip
_NAME_RE = re.compile(r"^[a-z0-9_]+$")
_VERSION_RE = re.compile(r"v([0-9]+)")
REDUX_SUBPATH = "spectro/redux/"


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


@dataclass(frozen=True)
class FolderListing:
    """The direct entries of one folder: subfolder names and file names, each sorted."""

    folders: tuple[str, ...]
    files: tuple[str, ...]


def _direct_links(html: str, base_url: str) -> list[str]:
    """Links of a listing page that resolve to a direct entry of ``base_url`` (``name[/]``)."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    base_parts = urlsplit(base)
    names = []
    for href in _hrefs(html):
        target = urlsplit(urljoin(base, href))
        elsewhere = target.netloc != base_parts.netloc
        if elsewhere or target.query or not target.path.startswith(base_parts.path):
            continue
        rest = unquote(target.path[len(base_parts.path) :])
        if rest not in ("", "/") and "/" not in rest.removesuffix("/"):
            names.append(rest)
    return names


def listing_subfolders(html: str, base_url: str) -> list[str]:
    """Names of the direct subfolders linked from a directory listing page at ``base_url``.

    Only links that resolve to ``<base_url><name>/`` count, so parent links (``../``), sort
    links (``?C=N;O=D``), files and links elsewhere are ignored.
    """
    return sorted({n[:-1] for n in _direct_links(html, base_url) if n.endswith("/")})


def listing_files(html: str, base_url: str) -> list[str]:
    """Names of the files linked from a directory listing page at ``base_url``.

    Only links that resolve to ``<base_url><name>`` (no trailing slash) count, so subfolders,
    parent and sort links, deeper paths and links elsewhere are ignored.
    """
    return sorted({n for n in _direct_links(html, base_url) if not n.endswith("/")})


def _http_listing(url: str, policy: RetryPolicy) -> FolderListing | None:
    """Entries of one HTTP folder; None when the folder does not exist (404).

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
    return FolderListing(tuple(listing_subfolders(page, url)), tuple(listing_files(page, url)))


def _fs_listing(fs: fsspec.AbstractFileSystem, path: str) -> FolderListing | None:
    """Entries of one fsspec folder; None when it does not exist."""
    try:
        entries = fs.ls(path.rstrip("/"), detail=True, refresh=True)
    except FileNotFoundError:
        return None
    names = {
        kind: sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == kind)
        for kind in ("directory", "file")
    }
    return FolderListing(tuple(names["directory"]), tuple(names["file"]))


@dataclass(frozen=True, order=True)
class ProductionListing:
    """One ``<release>/spectro/redux/<specprod>/`` folder and its zcatalog folder.

    ``zcatalog_dir`` is the folder, relative to the production, that holds
    ``zall-pix-<specprod>.fits`` (see :func:`find_zcatalog_dir`); None when none does, so the
    production cannot be ingested.
    """

    release: str
    specprod: str
    zcatalog_dir: str | None


# lists the entries of one folder, given its path or URL; None when the folder does not exist
Lister = Callable[[str], FolderListing | None]


def find_zcatalog_dir(production: str, specprod: str, entries: Lister) -> str | None:
    """The folder under ``production`` (ending in ``/``) that holds the zall-pix catalogue.

    ``zcatalog`` when ``zcatalog/zall-pix-<specprod>.fits`` is listed, else the highest-numbered
    ``zcatalog/v<N>`` whose listing holds it (looked into from the highest down), else None.
    ``entries`` lists one folder (None when it does not exist).
    """
    wanted = layout.zall_pix_name(specprod)
    top = entries(f"{production}{FLAT_ZCATALOG_DIR}/")
    if top is None:
        return None
    if wanted in top.files:
        return FLAT_ZCATALOG_DIR
    versions = [m for m in map(_VERSION_RE.fullmatch, top.folders) if m]
    for match in sorted(versions, key=lambda m: int(m.group(1)), reverse=True):
        inner = entries(f"{production}{FLAT_ZCATALOG_DIR}/{match.group(0)}/")
        if inner is not None and wanted in inner.files:
            return f"{FLAT_ZCATALOG_DIR}/{match.group(0)}"
    return None


def _list(root: str, entries: Lister) -> list[ProductionListing]:
    """Productions under ``root`` given a function listing the entries of a folder."""
    top = entries(root)
    if top is None:
        raise FetchError(root, "release root not found")
    names = [n for n in top.folders if _NAME_RE.match(n)]
    # the listings of one level are independent: overlap their latencies
    with ThreadPoolExecutor(max_workers=4) as pool:
        redux = list(pool.map(entries, [f"{root}{name}/{REDUX_SUBPATH}" for name in names]))
        pairs = [
            (name, prod)
            for name, found in zip(names, redux, strict=True)
            for prod in (found.folders if found else ())
            if _NAME_RE.match(prod)
        ]
        folders = [f"{root}{name}/{REDUX_SUBPATH}{prod}/" for name, prod in pairs]
        contents = list(pool.map(entries, folders))
        # only a production that lists a zcatalog/ folder is looked into
        look = [
            i for i, found in enumerate(contents) if found and FLAT_ZCATALOG_DIR in found.folders
        ]
        found_dirs = pool.map(lambda i: find_zcatalog_dir(folders[i], pairs[i][1], entries), look)
        zdirs: list[str | None] = [None] * len(pairs)
        for i, zdir in zip(look, found_dirs, strict=True):
            zdirs[i] = zdir
    return [
        ProductionListing(name, prod, zdir) for (name, prod), zdir in zip(pairs, zdirs, strict=True)
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
        found = _list(root, lambda url: _http_listing(url, policy))
    else:
        if root.startswith("s3://"):
            fs, path = s3_filesystem(s3_endpoint_url, policy), root[len("s3://") :]
        else:
            fs, path = fsio.filesystem(root)
            path = path.rstrip("/") + "/"
        found = _list(path, lambda p: _fs_listing(fs, p))
    log.info("found %d productions under %s", len(found), root)
    return sorted(found)
