"""Data releases: a DESI release name always travels with its spectroscopic production.

Which releases exist, and which production each uses, is read from the source's listings by
:func:`discover_releases`; no code path depends on a list of release names.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from astroclip_core.sources.http import RetryPolicy

log = logging.getLogger(__name__)

# The zcatalog folder of the DESI data model; a production that versions its catalogue puts it
# one level down, in ``zcatalog/v<N>/`` (DR1/iron: ``zcatalog/v1``).
FLAT_ZCATALOG_DIR = "zcatalog"
_ZCATALOG_DIR_RE = re.compile(r"zcatalog(/v[0-9]+)?")


@dataclass(frozen=True, order=True)
class Release:
    """One DESI data release, e.g. ``Release("edr", "fuji")``.

    ``name`` is the public folder (``<root>/<name>/spectro/redux/<specprod>/``) and
    ``specprod`` the spectroscopic production inside it. ``zcatalog_dir`` is the folder of the
    redshift catalogues relative to the production root: ``zcatalog`` or ``zcatalog/v<N>``.
    :func:`discover_releases` reads it from the listing; a hand-built Release defaults to the
    flat ``zcatalog`` of the DESI data model (EDR's layout), so one of a versioned production
    must say so, e.g. ``Release("dr1", "iron", "zcatalog/v1")``.
    """

    name: str
    specprod: str
    zcatalog_dir: str = FLAT_ZCATALOG_DIR

    def __post_init__(self) -> None:
        for field, value in (("name", self.name), ("specprod", self.specprod)):
            if not value or not value.replace("_", "").isalnum() or value != value.lower():
                raise ValueError(f"release {field} {value!r} must be a lower-case identifier")
        if not _ZCATALOG_DIR_RE.fullmatch(self.zcatalog_dir):
            raise ValueError(
                f"release {self.name!r}: zcatalog_dir {self.zcatalog_dir!r} must be 'zcatalog' "
                f"or 'zcatalog/v<N>' (relative to the production root, no slashes around it)"
            )


# Documentation only: the public releases at the time of writing. Nothing reads this table at
# run time; releases, their productions and zcatalog folders come from :func:`discover_releases`.
KNOWN_RELEASES: dict[str, Release] = {
    "edr": Release("edr", "fuji", "zcatalog"),
    "dr1": Release("dr1", "iron", "zcatalog/v1"),
}


class ReleaseNotFoundError(ValueError):
    """A release name that the source does not publish; the message names both."""


def choose_production(release: str, has_zcatalog: Mapping[str, bool]) -> str | None:
    """The production of ``release``, given whether each production has a zcatalog.

    A production has a zcatalog when its ``zcatalog/`` folder, or a ``zcatalog/v<N>/`` folder
    in it, holds ``zall-pix-<specprod>.fits``; only such a production can be ingested, so with
    several productions the one that has a zcatalog is taken. None when no production has one
    (a release still being uploaded: it is not published yet). Raises ValueError naming the
    release and the productions when more than one has a zcatalog, because the listing cannot
    tell which is meant; pin one with the DESI source's ``specprod`` setting.
    """
    with_catalog = sorted(prod for prod, has in has_zcatalog.items() if has)
    if len(with_catalog) > 1:
        raise ValueError(
            f"release {release!r} has several productions with a zcatalog ({', '.join(with_catalog)}); "
            f"set the DESI source's specprod to pick one"
        )
    return with_catalog[0] if with_catalog else None


def discover_releases(
    root_url: str,
    *,
    specprods: Mapping[str, str] | None = None,
    s3_endpoint_url: str | None = None,
    policy: RetryPolicy | None = None,
) -> list[Release]:
    """The releases published under a DESI public root, each with its production, sorted.

    Reads the root's listing, then each release's ``spectro/redux/`` listing, each
    production's folder and its ``zcatalog/`` (and ``zcatalog/v<N>/``) listings. When a release
    has several productions, the one that has a zcatalog is taken (:func:`choose_production`),
    unless ``specprods`` pins the production of that release by name. A release without a
    production that has a zcatalog (or whose pinned production has none) is not listed. Each
    Release's ``zcatalog_dir`` is where its ``zall-pix-<specprod>.fits`` was found:
    ``zcatalog`` when it lies there, else the highest-numbered ``zcatalog/v<N>`` holding it.
    ``root_url`` is an http(s):// URL (Apache-style listings), ``s3://bucket/prefix/``
    (anonymous; ``s3_endpoint_url`` picks the endpoint) or a local folder. ``policy`` defaults
    to short timeouts fit for a sensor tick. Raises
    :class:`astroclip_core.sources.http.FetchError` when the root cannot be read.
    """
    from astroclip_core.sources.releases_index import INDEX_POLICY, list_productions

    listings = list_productions(root_url, policy or INDEX_POLICY, s3_endpoint_url)
    by_release: dict[str, dict[str, str | None]] = {}
    for item in listings:
        by_release.setdefault(item.release, {})[item.specprod] = item.zcatalog_dir
    pins = specprods or {}
    releases = []
    for name, productions in sorted(by_release.items()):
        folders = {prod: folder for prod, folder in productions.items() if folder is not None}
        if name in pins:
            specprod = pins[name] if pins[name] in folders else None
        else:
            specprod = choose_production(name, {prod: prod in folders for prod in productions})
        if specprod is None:
            pinned = f"the pinned production {pins[name]!r} has" if name in pins else "has"
            log.info("%s%s: %s no zcatalog yet; not listed", root_url, name, pinned)
            continue
        releases.append(Release(name, specprod, folders[specprod]))
    return releases


def find_release(releases: list[Release], name: str, where: str) -> Release:
    """The release called ``name`` among ``releases`` (as listed under ``where``).

    Raises :class:`ReleaseNotFoundError` naming the release, ``where`` and what is listed there.
    """
    for release in releases:
        if release.name == name:
            return release
    listed = ", ".join(r.name for r in releases) or "none"
    raise ReleaseNotFoundError(
        f"release {name!r} is not published under {where} (published there: {listed})"
    )
