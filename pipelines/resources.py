"""Resources: the data root, the DESI and Legacy Surveys sources, and the sample sky.

With nothing configured, both sources point at the sample sky, whose loopback server starts
and stops with :class:`SampleSkyResource`. Setting a source's URL switches it to a real
archive (for example ``https://data.desi.lbl.gov/public/`` or ``s3://desidata/``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field, PrivateAttr

from astroclip_core.ingest.bricks import DEFAULT_IMAGING
from astroclip_core.ingest.rawcache import DEFAULT_RAW_CACHE, RAW_CACHE_ENV, RawCachePolicy
from astroclip_core.releases import Release, discover_releases, find_release
from astroclip_core.sources.http import RetryPolicy
from astroclip_core.sources.legacysurvey import LegacySurveySource
from astroclip_core.storage import StorageLayout, default_root

if TYPE_CHECKING:  # imported when used: starting the code location needs neither
    from astroclip_core.samplesky.server import SampleSkyServer
    from astroclip_core.sources.desi import DesiSource

# Read for their defaults only: every default below that these classes have is theirs.
_RETRY = RetryPolicy()
_LEGACYSURVEY = LegacySurveySource()


class RetrySettings(dg.Config):
    """How a source retries (429/5xx/timeouts: exponential backoff with jitter, Retry-After).

    The defaults are :class:`~astroclip_core.sources.http.RetryPolicy`'s.
    """

    max_attempts: int = Field(default=_RETRY.max_attempts, description="Attempts per request.")
    backoff_base_s: float = Field(default=_RETRY.backoff_base_s, description="First backoff, s.")
    backoff_max_s: float = Field(default=_RETRY.backoff_max_s, description="Largest backoff, s.")
    retry_after_max_s: float = Field(
        default=_RETRY.retry_after_max_s, description="Longest Retry-After honoured, s."
    )
    connect_timeout_s: float = Field(
        default=_RETRY.connect_timeout_s, description="Connect timeout, seconds."
    )
    read_timeout_s: float = Field(
        default=_RETRY.read_timeout_s, description="Read timeout, seconds."
    )
    corrupt_refetches: int = Field(
        default=_RETRY.corrupt_refetches,
        description="Whole extra downloads of a file that fails validation.",
    )

    def policy(self) -> RetryPolicy:
        """The library's RetryPolicy with these settings."""
        return RetryPolicy(**self.model_dump())


class StorageResource(dg.ConfigurableResource):
    """The data root: a local path or any fsspec URL (``$ASTROCLIP_STORAGE``, default storage/)."""

    root: str = Field(
        default_factory=default_root,
        description="Data root (local path or fsspec URL such as s3://bucket/prefix).",
    )
    raw_cache: str = Field(
        default_factory=lambda: os.environ.get(RAW_CACHE_ENV) or DEFAULT_RAW_CACHE,
        description="Raw download cache after a partition's pairs are written: keep, evict "
        "(delete the partition's own raw files) or a size cap such as 2gb (least recently used "
        "out); default $ASTROCLIP_RAW_CACHE, else evict. See astroclip_core.ingest.rawcache.",
    )

    def layout(self) -> StorageLayout:
        """The storage layout over this root."""
        return StorageLayout(self.root)

    def raw_cache_policy(self) -> RawCachePolicy:
        """The parsed ``raw_cache``; ValueError naming the value when it is not a policy."""
        return RawCachePolicy.parse(self.raw_cache)


class SampleSkyResource(dg.ConfigurableResource):
    """The embedded synthetic survey: generated on first use, served on 127.0.0.1 during a step."""

    root: str = Field(
        default="",
        description="Sample-sky folder; empty = <data root>/samplesky ($ASTROCLIP_STORAGE).",
    )
    seed: int | None = Field(default=None, description="Generator seed (empty = the preset's).")
    size: str = Field(
        default="default", description="Generator size preset: tiny, small or default."
    )
    scale: int = Field(
        default=1,
        ge=1,
        description="Each release covers this many times the preset's nside-16 pixels "
        "(neighbours added; 1 = the preset as it is).",
    )
    releases: list[str] = Field(
        default=["edr"], description="Releases generated (published) if missing when a step starts."
    )
    _server: SampleSkyServer | None = PrivateAttr(default=None)

    def folder(self) -> str:
        """The folder the sample sky lives in."""
        from astroclip_core.samplesky.service import default_samplesky_root

        return self.root or str(default_samplesky_root())

    def desi_folder(self) -> str:
        """The local folder served as the DESI public root (its listing is the release index)."""
        from astroclip_core.samplesky.generate import desi_root

        return str(desi_root(Path(self.folder())))

    def publish(self, extra: list[str] | tuple[str, ...] = ()) -> None:
        """Generate the configured ``releases`` and ``extra`` that are not yet published.

        Raises ValueError when one of them is not a release of this size preset.
        """
        from astroclip_core.samplesky.service import ensure_published

        names = list(dict.fromkeys([*self.releases, *extra]))
        ensure_published(self.folder(), names, seed=self.seed, size=self.size, scale=self.scale)

    def offered(self) -> list[Release]:
        """The releases this size preset describes, each generated when asked for."""
        from astroclip_core.samplesky.service import releases_of

        return releases_of(self.size, self.seed, self.scale)

    def can_generate(self) -> list[str]:
        """Names of the releases this size preset describes."""
        return [r.name for r in self.offered()]

    def truth_path(self, release: str) -> str:
        """The truth table (true redshift and properties) of one sample-sky release."""
        from astroclip_core.samplesky.service import truth_path

        return str(truth_path(self.folder(), release))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @contextmanager
    def serving(self, generate_missing: bool = True) -> Iterator[SampleSkyServer]:
        """Serve outside a Dagster step (sensors, tests); yields the running server."""
        from astroclip_core.samplesky.service import start_server

        if generate_missing:
            self.publish()
        server = start_server(self.folder())
        try:
            yield server
        finally:
            server.stop()

    @property
    def server(self) -> SampleSkyServer:
        """The running server, started (and the sky generated if missing) on first use.

        Steps whose sources point at real archives never touch this, so nothing starts.
        """
        if self._server is None:
            from astroclip_core.samplesky.service import start_server

            self.publish()
            self._server = start_server(self.folder())
        return self._server


class DesiSourceResource(dg.ConfigurableResource):
    """Where DESI spectra come from: release, production, zcatalog folder and public root URL."""

    release: str = Field(default="edr", description="Default release name (edr, dr1, ...).")
    specprod: str = Field(
        default="",
        description="Production of the default release; empty = read from the root's listing.",
    )
    zcatalog_dir: str = Field(
        default="",
        description=(
            "zcatalog folder of that production (zcatalog, zcatalog/v1, ...), used only with "
            "specprod; empty = read from the listing."
        ),
    )
    root_url: str = Field(
        default="",
        description="Public root (https://data.desi.lbl.gov/public/ or s3://desidata/); empty = sample sky.",
    )
    s3_endpoint_url: str = Field(
        default="", description="S3 endpoint for s3:// roots (empty = AWS)."
    )
    retry: RetrySettings = Field(default_factory=RetrySettings, description="Retry behaviour.")

    def where(self, sample_sky: SampleSkyResource) -> str:
        """The public root that is listed: ``root_url``, else the sample sky's local folder."""
        return self.root_url or sample_sky.desi_folder()

    def published_releases(
        self,
        sample_sky: SampleSkyResource,
        generate_missing: bool = True,
        policy: RetryPolicy | None = None,
    ) -> list[Release]:
        """The releases the source publishes, read from its listings, with the override applied.

        With no ``root_url`` that is the sample sky's folder, whose configured releases are
        generated first unless ``generate_missing`` is False (the sensor only looks). A
        ``specprod`` override picks that production of ``release`` (whose zcatalog folder is
        read from the listing, unless ``zcatalog_dir`` pins it too). The listings are read with
        ``policy``, default this resource's retries.
        """
        if not self.root_url and generate_missing:
            sample_sky.publish()
        found = discover_releases(
            self.where(sample_sky),
            specprods={self.release: self.specprod} if self.specprod else None,
            s3_endpoint_url=self.s3_endpoint_url or None,
            policy=policy or self.retry.policy(),
        )
        return [self.pinned(r.name) or r for r in found]

    def pinned(self, name: str) -> Release | None:
        """The Release this resource fixes for ``name`` without listing; None when it fixes none.

        Only ``specprod`` and ``zcatalog_dir`` together fix a release (the sensor's runs carry
        both); with ``specprod`` alone the zcatalog folder is read from the listing.
        """
        if name != self.release or not (self.specprod and self.zcatalog_dir):
            return None
        return Release(name, self.specprod, self.zcatalog_dir)

    def release_for(self, name: str, sample_sky: SampleSkyResource) -> Release:
        """The Release called ``name``: pinned by this resource, else read from the listings.

        Raises :class:`astroclip_core.releases.ReleaseNotFoundError` when the source does not
        publish ``name``.
        """
        pinned = self.pinned(name)
        if pinned is not None:
            return pinned
        return find_release(self.published_releases(sample_sky), name, self.where(sample_sky))

    def settings_for(self, release: Release) -> dict[str, object]:
        """Every setting of this resource, with ``release``, its production and zcatalog pinned."""
        return {
            **self.model_dump(),
            "release": release.name,
            "specprod": release.specprod,
            "zcatalog_dir": release.zcatalog_dir,
        }

    def for_release(self, release: Release) -> DesiSourceResource:
        """This resource pinned to ``release``: its steps read the production without listing."""
        return DesiSourceResource(**self.settings_for(release))

    def run_config(self, release: Release) -> dict[str, object]:
        """Run config that carries every setting of this resource into a run of ``release``.

        A sensor's run requests use it, so a requested run reads the same root, S3 endpoint,
        retries, production and zcatalog folder as the sensor did, without listing again.
        Every field is given, because run config replaces a resource's whole configuration.
        """
        return {"resources": {"desi": {"config": self.settings_for(release)}}}

    def source(self, name: str, sample_sky: SampleSkyResource | None) -> DesiSource:
        """A ``DesiSource`` for release ``name`` (the sample sky's when no root is configured)."""
        from astroclip_core.sources.desi import DesiSource

        release = self.release_for(name, sample_sky)
        root = self.root_url or sample_sky.server.desi_root_url
        return DesiSource(
            release=release,
            root_url=root,
            s3_endpoint_url=self.s3_endpoint_url or None,
        )


class LegacySurveySourceResource(dg.ConfigurableResource):
    """Where DR9 imaging comes from: sweep root and cutout service with its query parameters."""

    sweep_root_url: str = Field(
        default="", description="DR9 root (…/legacysurvey/dr9/); empty = sample sky."
    )
    cutout_url: str = Field(default="", description="fits-cutout endpoint; empty = sample sky.")
    layer: str = Field(default=_LEGACYSURVEY.layer, description="Cutout layer.")
    pixscale_arcsec: float = Field(
        default=_LEGACYSURVEY.pixscale_arcsec, description="Cutout pixel scale (arcsec/pixel)."
    )
    bands: str = Field(default=_LEGACYSURVEY.bands, description="Cutout bands, in order.")
    size_pix: int = Field(default=_LEGACYSURVEY.size_pix, description="Cutout size in pixels.")
    max_concurrent_requests: int = Field(
        default=8, description="Parallel cutout requests per step (the pool caps the steps)."
    )
    imaging: str = Field(
        default=DEFAULT_IMAGING,
        description="Where stamps come from: auto (the cost rule of astroclip_core.ingest.bricks, "
        "per partition), service (one cutout request per object) or bricks (cut from DR9 coadd "
        "bricks).",
    )
    brick_root_url: str = Field(
        default="",
        description="DR9 root the coadd bricks are read from: a URL, or an on-disk mirror (a "
        "path or file://, read in place); empty = the sweep root (or the sample sky).",
    )
    retry: RetrySettings = Field(default_factory=RetrySettings, description="Retry behaviour.")

    def source(self, sample_sky: SampleSkyResource | None) -> LegacySurveySource:
        """A ``LegacySurveySource`` (the sample sky's when no URLs are configured)."""
        server = sample_sky.server if not (self.sweep_root_url and self.cutout_url) else None
        return LegacySurveySource(
            root_url=self.sweep_root_url or server.legacysurvey_root_url,
            cutout_url=self.cutout_url or server.cutout_url,
            layer=self.layer,
            pixscale_arcsec=self.pixscale_arcsec,
            bands=self.bands,
            size_pix=self.size_pix,
            brick_root_url=self.brick_root_url,
        )


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """The resources every asset uses, all pointing at the sample sky by default."""
    return {
        "storage": StorageResource(),
        "sample_sky": SampleSkyResource(),
        "desi": DesiSourceResource(),
        "legacysurvey": LegacySurveySourceResource(),
    }
