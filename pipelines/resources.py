"""Resources: the data root, the DESI and Legacy Surveys sources, and the sample sky.

With nothing configured, both sources point at the sample sky, whose loopback server starts
and stops with :class:`SampleSkyResource`. Setting a source's URL switches it to a real
archive (for example ``https://data.desi.lbl.gov/public/`` or ``s3://desidata/``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from astroclip_core.releases import Release, release_from_name
from astroclip_core.storage import StorageLayout, default_root


class RetrySettings(dg.Config):
    """How a source retries (429/5xx/timeouts: exponential backoff with jitter, Retry-After)."""

    max_attempts: int = Field(default=5, description="Attempts per request.")
    backoff_base_s: float = Field(default=0.5, description="First backoff, seconds.")
    backoff_max_s: float = Field(default=30.0, description="Largest backoff, seconds.")
    connect_timeout_s: float = Field(default=10.0, description="Connect timeout, seconds.")
    read_timeout_s: float = Field(default=60.0, description="Read timeout, seconds.")

    def policy(self) -> Any:
        """The library's RetryPolicy."""
        from astroclip_core.sources.http import RetryPolicy

        return RetryPolicy(
            max_attempts=self.max_attempts,
            backoff_base_s=self.backoff_base_s,
            backoff_max_s=self.backoff_max_s,
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
        )


class StorageResource(dg.ConfigurableResource):
    """The data root: a local path or any fsspec URL (``$ASTROCLIP_STORAGE``, default storage/)."""

    root: str = Field(
        default_factory=default_root,
        description="Data root (local path or fsspec URL such as s3://bucket/prefix).",
    )

    def layout(self) -> StorageLayout:
        """The storage layout over this root."""
        return StorageLayout(self.root)


class SampleSkyResource(dg.ConfigurableResource):
    """The embedded synthetic survey: generated on first use, served on 127.0.0.1 during a step."""

    root: str = Field(
        default="", description="Sample-sky folder; empty = <repo>/storage/samplesky."
    )
    seed: int | None = Field(default=None, description="Generator seed (empty = the preset's).")
    size: str = Field(
        default="default", description="Generator size preset: tiny, small or default."
    )
    releases: list[str] = Field(
        default=["edr"], description="Releases generated (published) if missing when a step starts."
    )
    _server: Any = PrivateAttr(default=None)

    def folder(self) -> str:
        """The folder the sample sky lives in."""
        from astroclip_core.samplesky.service import default_samplesky_root

        return self.root or str(default_samplesky_root())

    def truth_path(self, release: str) -> str:
        """The truth table (true redshift and properties) of one sample-sky release."""
        from astroclip_core.samplesky.service import truth_path

        return str(truth_path(self.folder(), release))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @contextmanager
    def serving(self, generate_missing: bool = True) -> Iterator[Any]:
        """Serve outside a Dagster step (sensors, tests); yields the running server."""
        from astroclip_core.samplesky.service import ensure_published, start_server

        if generate_missing:
            ensure_published(self.folder(), self.releases, seed=self.seed, size=self.size)
        server = start_server(self.folder())
        try:
            yield server
        finally:
            server.stop()

    @property
    def server(self) -> Any:
        """The running server, started (and the sky generated if missing) on first use.

        Steps whose sources point at real archives never touch this, so nothing starts.
        """
        if self._server is None:
            from astroclip_core.samplesky.service import ensure_published, start_server

            ensure_published(self.folder(), self.releases, seed=self.seed, size=self.size)
            self._server = start_server(self.folder())
        return self._server


class DesiSourceResource(dg.ConfigurableResource):
    """Where DESI spectra come from: release, production and public root URL."""

    release: str = Field(default="edr", description="Default release name (edr, dr1, ...).")
    specprod: str = Field(
        default="", description="Spectroscopic production; empty = the release's known one."
    )
    root_url: str = Field(
        default="",
        description="Public root (https://data.desi.lbl.gov/public/ or s3://desidata/); empty = sample sky.",
    )
    s3_endpoint_url: str = Field(
        default="", description="S3 endpoint for s3:// roots (empty = AWS)."
    )
    retry: RetrySettings = Field(default_factory=RetrySettings, description="Retry behaviour.")

    def release_for(self, name: str) -> Release:
        """The Release called ``name``, with this resource's specprod override for its default release."""
        if name == self.release and self.specprod:
            return Release(name, self.specprod)
        return release_from_name(name)

    def source(self, name: str, sample_sky: SampleSkyResource | None) -> Any:
        """A ``DesiSource`` for release ``name`` (the sample sky's when no root is configured)."""
        from astroclip_core.sources.desi import DesiSource

        root = self.root_url or sample_sky.server.desi_root_url
        return DesiSource(
            release=self.release_for(name),
            root_url=root,
            s3_endpoint_url=self.s3_endpoint_url or None,
        )


class LegacySurveySourceResource(dg.ConfigurableResource):
    """Where DR9 imaging comes from: sweep root and cutout service with its query parameters."""

    sweep_root_url: str = Field(
        default="", description="DR9 root (…/legacysurvey/dr9/); empty = sample sky."
    )
    cutout_url: str = Field(default="", description="fits-cutout endpoint; empty = sample sky.")
    layer: str = Field(default="ls-dr9", description="Cutout layer.")
    pixscale_arcsec: float = Field(default=0.262, description="Cutout pixel scale (arcsec/pixel).")
    bands: str = Field(default="grz", description="Cutout bands, in order.")
    size_pix: int = Field(default=152, description="Cutout size in pixels.")
    max_concurrent_requests: int = Field(
        default=8, description="Parallel cutout requests per step (the pool caps the steps)."
    )
    retry: RetrySettings = Field(default_factory=RetrySettings, description="Retry behaviour.")

    def source(self, sample_sky: SampleSkyResource | None) -> Any:
        """A ``LegacySurveySource`` (the sample sky's when no URLs are configured)."""
        from astroclip_core.sources.legacysurvey import LegacySurveySource

        server = sample_sky.server if not (self.sweep_root_url and self.cutout_url) else None
        return LegacySurveySource(
            root_url=self.sweep_root_url or server.legacysurvey_root_url,
            cutout_url=self.cutout_url or server.cutout_url,
            layer=self.layer,
            pixscale_arcsec=self.pixscale_arcsec,
            bands=self.bands,
            size_pix=self.size_pix,
        )


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """The resources every asset uses, all pointing at the sample sky by default."""
    return {
        "storage": StorageResource(),
        "sample_sky": SampleSkyResource(),
        "desi": DesiSourceResource(),
        "legacysurvey": LegacySurveySourceResource(),
    }
