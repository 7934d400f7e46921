"""Data releases: a DESI release name always travels with its spectroscopic production.

Which releases exist, and which production each uses, is read from the source's listings by
:func:`discover_releases`; no code path depends on a list of release names.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from astroclip_core.sources.http import RetryPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class Release:
    """One DESI data release, e.g. ``Release("edr", "fuji")``.

    ``name`` is the public folder (``<root>/<name>/spectro/redux/<specprod>/``) and
    ``specprod`` the spectroscopic production inside it.
    """

    name: str
    specprod: str

    def __post_init__(self) -> None:
        for field, value in (("name", self.name), ("specprod", self.specprod)):
            if not value or not value.replace("_", "").isalnum() or value != value.lower():
                raise ValueError(f"release {field} {value!r} must be a lower-case identifier")


# Documentation only: the public releases at the time of writing. Nothing reads this table at
# run time; releases and their productions come from :func:`discover_releases`.
KNOWN_RELEASES: dict[str, Release] = {
    "edr": Release("edr", "fuji"),
    "dr1": Release("dr1", "iron"),
}


class ReleaseNotFoundError(ValueError):
    """A release name that the source does not publish; the message names both."""


def choose_production(release: str, has_zcatalog: Mapping[str, bool]) -> str | None:
    """The production of ``release``, given each production's ``zcatalog/`` presence.

    Only a production with a ``zcatalog/`` folder can be ingested, so with several productions
    the one that has a ``zcatalog/`` is taken. None when no production has one (a release still
    being uploaded: it is not published yet). Raises ValueError naming the release and the
    productions when more than one has a ``zcatalog/``, because the listing cannot tell which
    is meant; pin one with the DESI source's ``specprod`` setting.
    """
    with_catalog = sorted(prod for prod, has in has_zcatalog.items() if has)
    if len(with_catalog) > 1:
        raise ValueError(
            f"release {release!r} has several productions with a zcatalog ({', '.join(with_catalog)}); "
            f"set the DESI source's specprod to pick one"
        )
    return with_catalog[0] if with_catalog else None


def discover_releases(
    root_url: str, *, s3_endpoint_url: str | None = None, policy: RetryPolicy | None = None
) -> list[Release]:
    """The releases published under a DESI public root, each with its production, sorted.

    Reads the root's listing, then each release's ``spectro/redux/`` listing and each
    production's folder. When a release has several productions, the one that has a
    ``zcatalog/`` folder is taken (:func:`choose_production`); a release none of whose
    productions has one is not listed. ``root_url`` is an http(s):// URL (Apache-style
    listings), ``s3://bucket/prefix/`` (anonymous; ``s3_endpoint_url`` picks the endpoint) or a
    local folder. ``policy`` defaults to short timeouts fit for a sensor tick. Raises
    :class:`astroclip_core.sources.http.FetchError` when the root cannot be read.
    """
    from astroclip_core.sources.releases_index import INDEX_POLICY, list_productions

    listings = list_productions(root_url, policy or INDEX_POLICY, s3_endpoint_url)
    by_release: dict[str, dict[str, bool]] = {}
    for item in listings:
        by_release.setdefault(item.release, {})[item.specprod] = item.has_zcatalog
    releases = []
    for name, productions in sorted(by_release.items()):
        specprod = choose_production(name, productions)
        if specprod is None:
            log.info("%s%s: no production has a zcatalog yet; not listed", root_url, name)
            continue
        releases.append(Release(name, specprod))
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
