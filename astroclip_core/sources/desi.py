"""DESI spectroscopic files: the redshift catalogue and the healpix coadds a selection needs.

Remote paths come from :mod:`astroclip_core.sources.layout` and cache paths from
:class:`astroclip_core.storage.StorageLayout` (``raw/desi/<same relative path>``), so the
cache mirrors the public tree. Every fetch follows :func:`astroclip_core.sources.fetch.fetch_file`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from astroclip_core.releases import Release
from astroclip_core.sources import layout
from astroclip_core.sources.fetch import (
    FailureRecord,
    FetchJob,
    FetchResult,
    Validator,
    fetch_all,
    fetch_file,
    fits_validator,
)
from astroclip_core.sources.http import RetryClock, RetryPolicy
from astroclip_core.storage import StorageLayout

# Default checks before a file enters the cache (headers only; see fits_validator).
COADD_HDUS = ("FIBERMAP",) + tuple(
    f"{arm}_{part}" for arm in "BRZ" for part in ("WAVELENGTH", "FLUX", "IVAR", "MASK")
)
COADD_VALIDATOR = fits_validator(COADD_HDUS)
ZCATALOG_VALIDATOR = fits_validator(("ZCATALOG",))


@dataclass(frozen=True, order=True)
class CoaddFile:
    """One healpix coadd file: survey, program and nside-64 nested coadd pixel."""

    survey: str
    program: str
    coadd_pixel: int

    @property
    def key(self) -> str:
        """Stable name, e.g. ``sv3-dark-26065`` (the failures table's key)."""
        return f"{self.survey}-{self.program}-{self.coadd_pixel}"


def coadd_files_for(
    survey: Sequence[str], program: Sequence[str], coadd_pixel: np.ndarray
) -> list[CoaddFile]:
    """The distinct coadd files holding the given targets.

    The three arguments are the catalogue columns SURVEY, PROGRAM and HEALPIX (the nside-64
    coadd pixel), one value per target.
    """
    if not len(survey) == len(program) == len(coadd_pixel):
        raise ValueError(
            f"survey, program and coadd_pixel must have one value per target; "
            f"got lengths {len(survey)}, {len(program)}, {len(coadd_pixel)}"
        )
    unique = {
        CoaddFile(str(s).strip(), str(p).strip(), int(h))
        for s, p, h in zip(survey, program, np.asarray(coadd_pixel), strict=True)
    }
    return sorted(unique)


@dataclass(frozen=True)
class DesiSource:
    """One DESI release under one public root.

    ``root_url`` is the folder holding the release folders: ``https://data.desi.lbl.gov/public/``,
    ``s3://desidata/`` (read anonymously; ``s3_endpoint_url`` or ``$AWS_ENDPOINT_URL`` picks a
    custom endpoint), or the sample sky's ``http://127.0.0.1:<port>/public/``.
    """

    release: Release
    root_url: str = layout.DESI_PUBLIC_ROOT
    s3_endpoint_url: str | None = None

    def url(self, relpath: str) -> str:
        """Remote URL of a path relative to the public root (as built by ``layout``)."""
        return f"{self.root_url.rstrip('/')}/{relpath.lstrip('/')}"

    def zcatalog_url(self) -> str:
        """URL of the all-survey healpix redshift catalogue."""
        return self.url(layout.zcatalog_path(self.release))

    def zpix_url(self, survey: str, program: str) -> str:
        """URL of one survey/program redshift catalogue."""
        return self.url(layout.zpix_path(self.release, survey, program))

    def coadd_url(self, coadd: CoaddFile) -> str:
        """URL of one healpix coadd file."""
        return self.url(
            layout.coadd_path(self.release, coadd.survey, coadd.program, coadd.coadd_pixel)
        )

    def fetch(
        self,
        relpath: str,
        cache: StorageLayout,
        validate: Validator | None = None,
        policy: RetryPolicy | None = None,
        clock: RetryClock | None = None,
    ) -> FetchResult:
        """Fetch one file of the public tree into ``raw/desi/<relpath>`` (cache hit: no request)."""
        return fetch_file(
            self.url(relpath),
            cache.raw_desi(relpath),
            validate,
            policy,
            clock=clock,
            s3_endpoint_url=self.s3_endpoint_url,
        )

    def fetch_zcatalog(
        self,
        cache: StorageLayout,
        validate: Validator | None = ZCATALOG_VALIDATOR,
        policy: RetryPolicy | None = None,
        clock: RetryClock | None = None,
    ) -> str:
        """Cache path of the redshift catalogue (``zall-pix-<specprod>.fits``), fetched if needed.

        The step cannot go on without it, so a failure raises :class:`FetchError`.
        """
        relpath = layout.zcatalog_path(self.release)
        return self.fetch(relpath, cache, validate, policy, clock).cached_path()

    def fetch_zpix(
        self,
        survey: str,
        program: str,
        cache: StorageLayout,
        validate: Validator | None = ZCATALOG_VALIDATOR,
        policy: RetryPolicy | None = None,
        clock: RetryClock | None = None,
    ) -> str:
        """Cache path of one survey/program catalogue (``zpix-<survey>-<program>.fits``)."""
        relpath = layout.zpix_path(self.release, survey, program)
        return self.fetch(relpath, cache, validate, policy, clock).cached_path()

    def fetch_coadd(
        self,
        cache: StorageLayout,
        survey: str,
        program: str,
        coadd_pixel: int,
        validate: Validator | None = COADD_VALIDATOR,
        policy: RetryPolicy | None = None,
        clock: RetryClock | None = None,
    ) -> str:
        """Cache path of one coadd file, fetched if needed; :class:`FetchError` on failure."""
        relpath = layout.coadd_path(self.release, survey, program, int(coadd_pixel))
        return self.fetch(relpath, cache, validate, policy, clock).cached_path()

    def fetch_coadds(
        self,
        coadds: Iterable[CoaddFile],
        cache: StorageLayout,
        validate: Validator | None = COADD_VALIDATOR,
        policy: RetryPolicy | None = None,
        concurrency: int = 4,
        clock: RetryClock | None = None,
    ) -> list[FetchResult]:
        """Fetch every coadd file (in the given order) on ``concurrency`` threads.

        Failed files have ``ok=False``; turn them into failure rows with :func:`coadd_failures`.
        """
        jobs = []
        for coadd in coadds:
            relpath = layout.coadd_path(
                self.release, coadd.survey, coadd.program, coadd.coadd_pixel
            )
            jobs.append(FetchJob(self.url(relpath), cache.raw_desi(relpath)))
        return fetch_all(
            jobs,
            validate,
            policy,
            concurrency,
            clock,
            s3_endpoint_url=self.s3_endpoint_url,
            label="coadd files",
        )


def coadd_failures(
    coadds: Sequence[CoaddFile], results: Sequence[FetchResult]
) -> list[FailureRecord]:
    """Failure rows (kind ``coadd``) for the failed results of :meth:`DesiSource.fetch_coadds`."""
    if len(coadds) != len(results):
        raise ValueError(f"{len(coadds)} coadd files but {len(results)} results")
    return [r.failure("coadd", c.key) for c, r in zip(coadds, results, strict=True) if not r.ok]
