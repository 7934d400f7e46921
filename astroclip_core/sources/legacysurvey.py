"""Legacy Surveys DR9: sweep catalogues covering a sky rectangle, and per-object image cutouts.

The cutout-source contract (:meth:`LegacySurveySource.fetch_cutouts`): for N positions it
returns a :class:`CutoutBatch`. ``ok`` (N,) says which positions got a validated
``(len(bands), size_pix, size_pix)`` float32 image in nanomaggies; ``images`` holds exactly
those images, in input order (``images[k]`` belongs to ``np.flatnonzero(ok)[k]``); every
failed position has a reason. Every response is cached under ``StorageLayout.cutout_cache``
before it is used, so a second call for the same positions makes no request; a cached
cutout that no longer decodes is deleted and fetched again (``fetch_file``). A band that is
all zeros means "no survey coverage there": it is flagged in ``no_data_bands`` and counted,
not failed. The ``concurrency`` cap on cutout requests holds per service host across every
process of this user on the machine, and across a Dask cluster when run in a Dask task
(:mod:`astroclip_core.sources.hostslots`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests

from astroclip_core.formats import FormatError
from astroclip_core.formats.legacysurvey import read_cutout
from astroclip_core.sources import layout
from astroclip_core.sources.fetch import (
    FailureRecord,
    FetchJob,
    FetchResult,
    Validator,
    fetch_all,
    fetch_file,
    fits_validator,
    map_with_sessions,
)
from astroclip_core.sources.hostslots import HostSlots
from astroclip_core.sources.http import RetryClock, RetryPolicy
from astroclip_core.storage import StorageLayout

log = logging.getLogger(__name__)

# Decodes the cutout file at a local path (a download on disk, or the cached file).
CutoutReader = Callable[[Path], np.ndarray]
# A sweep is a primary HDU plus one complete binary table (headers-only check).
SWEEP_VALIDATOR = fits_validator(min_hdus=2)


@dataclass(frozen=True, order=True)
class SweepBox:
    """One 10x5 deg sweep file: region ('north'/'south') and lower corner in integer degrees."""

    region: str
    ra_min_deg: int
    dec_min_deg: int

    @property
    def relpath(self) -> str:
        """Path relative to the DR9 root, from ``layout.sweep_path``."""
        return layout.sweep_path(self.region, self.ra_min_deg, self.dec_min_deg)

    @property
    def key(self) -> str:
        """Stable name, e.g. ``south/sweep-210p000-220p005`` (the failures table's key)."""
        return f"{self.region}/{layout.sweep_name(self.ra_min_deg, self.dec_min_deg)[:-5]}"


def sweep_boxes_covering(
    ra_min_deg: float, ra_max_deg: float, dec_min_deg: float, dec_max_deg: float
) -> list[SweepBox]:
    """Sweep files overlapping an RA/Dec rectangle (a partition's bounds plus its margin).

    ``ra_min_deg > ra_max_deg`` means the rectangle wraps through RA 0. A box is taken from
    'south' when any of it lies below Dec 32.375 (the ls-dr9 north/south join) and from
    'north' when any of it lies above; a box straddling the join is taken from both.
    """
    if dec_min_deg > dec_max_deg:
        raise ValueError(f"dec_min_deg={dec_min_deg} is above dec_max_deg={dec_max_deg}")
    spans = [(ra_min_deg, ra_max_deg)]
    if ra_min_deg > ra_max_deg:
        spans = [(ra_min_deg, 360.0), (0.0, ra_max_deg)]
    boxes: set[SweepBox] = set()
    for ra0, ra1 in spans:
        for ra, dec in layout.sweep_boxes_for(ra0, ra1, dec_min_deg, dec_max_deg):
            if dec < layout.DR9_NORTH_DEC_MIN_DEG:
                boxes.add(SweepBox("south", ra, dec))
            if dec + layout.SWEEP_DEC_STEP_DEG > layout.DR9_NORTH_DEC_MIN_DEG:
                boxes.add(SweepBox("north", ra, dec))
    return sorted(boxes)


@dataclass(frozen=True)
class CutoutBatch:
    """Cutouts for N positions.

    ``images`` (n_ok, B, S, S) float32, the successes in input order; ``ok`` (N,) bool;
    ``reasons`` one string per position ("" when ok); ``attempts`` (N,) requests made (0 on a
    cache hit); ``from_cache`` (N,) bool; ``no_data_bands`` (N, B) bool, True where a fetched
    band is all zeros; ``keys``/``urls`` the cache key and request URL of each position.
    """

    images: np.ndarray
    ok: np.ndarray
    reasons: tuple[str, ...]
    attempts: np.ndarray
    from_cache: np.ndarray
    no_data_bands: np.ndarray
    keys: tuple[str, ...]
    urls: tuple[str, ...]

    @property
    def n_failed(self) -> int:
        """Objects with no usable cutout."""
        return int((~self.ok).sum())

    @property
    def n_no_data(self) -> int:
        """Fetched objects with at least one all-zero ("no data") band."""
        return int((self.ok & self.no_data_bands.any(axis=1)).sum())

    def failures(self) -> list[FailureRecord]:
        """Failure rows (kind ``cutout``, key = cache key) for the failed objects."""
        return [
            FailureRecord(
                "cutout", self.keys[i], self.urls[i], self.reasons[i], int(self.attempts[i])
            )
            for i in np.flatnonzero(~self.ok)
        ]


@dataclass(frozen=True)
class LegacySurveySource:
    """Legacy Surveys DR9: sweep root, cutout service and the cutout parameters.

    ``root_url`` holds ``<north|south>/sweep/9.0/...`` (real: the NERSC portal; sample sky:
    ``http://127.0.0.1:<port>/cfs/cosmo/data/legacysurvey/dr9/``); ``cutout_url`` is the
    ``fits-cutout`` endpoint. ``brick_root_url`` is where the coadd bricks are read from
    (empty: ``root_url``; a plain path or ``file://`` URL reads an on-disk mirror in place).
    """

    root_url: str = layout.LEGACYSURVEY_DR9_ROOT
    cutout_url: str = layout.CUTOUT_SERVICE_URL
    layer: str = "ls-dr9"
    pixscale_arcsec: float = 0.262
    bands: str = "grz"
    size_pix: int = 152
    dr: str = "dr9"
    s3_endpoint_url: str | None = None
    brick_root_url: str = ""

    @property
    def brick_root(self) -> str:
        """The DR9 root the coadd bricks and brick tables are read from."""
        return self.brick_root_url or self.root_url

    def sweep_url(self, box: SweepBox) -> str:
        """Remote URL of one sweep file."""
        return f"{self.root_url.rstrip('/')}/{box.relpath}"

    def fetch_sweeps(
        self,
        boxes: Iterable[SweepBox],
        cache: StorageLayout,
        validate: Validator | None = SWEEP_VALIDATOR,
        policy: RetryPolicy | None = None,
        concurrency: int = 2,
        clock: RetryClock | None = None,
    ) -> list[FetchResult]:
        """Fetch every sweep file into ``raw/legacysurvey/<dr>/<relpath>``; results in box order."""
        jobs = [
            FetchJob(self.sweep_url(b), cache.raw_legacysurvey(self.dr, b.relpath)) for b in boxes
        ]
        return fetch_all(
            jobs,
            validate,
            policy,
            concurrency,
            clock,
            s3_endpoint_url=self.s3_endpoint_url,
            label="sweep files",
        )

    def fetch_sweep(
        self,
        cache: StorageLayout,
        region: str,
        ra_min_deg: int,
        dec_min_deg: int,
        validate: Validator | None = SWEEP_VALIDATOR,
        policy: RetryPolicy | None = None,
        clock: RetryClock | None = None,
    ) -> str | None:
        """Cache path of one sweep file, or None when the survey has no such file (HTTP 404).

        Other failures raise :class:`FetchError`.
        """
        box = SweepBox(region, int(ra_min_deg), int(dec_min_deg))
        result = fetch_file(
            self.sweep_url(box),
            cache.raw_legacysurvey(self.dr, box.relpath),
            validate,
            policy,
            clock=clock,
            s3_endpoint_url=self.s3_endpoint_url,
        )
        return None if result.status == 404 else result.cached_path()

    def cutout_request_url(self, ra_deg: float, dec_deg: float) -> str:
        """The cutout service URL for one position."""
        query = layout.cutout_query(
            ra_deg, dec_deg, self.layer, self.pixscale_arcsec, self.bands, self.size_pix
        )
        return f"{self.cutout_url}?{query}"

    def cutout_key(self, ra_deg: float, dec_deg: float) -> str:
        """Cache key from the position rounded as the query rounds it, plus the parameters.

        Sharded by integer RA so no folder holds more than a degree-wide strip of files.
        """
        ra, dec = round(float(ra_deg) % 360.0, 7), round(float(dec_deg), 7)
        sign = "p" if dec >= 0 else "m"
        return (
            f"{int(ra):03d}/{ra:011.7f}{sign}{abs(dec):010.7f}"
            f"-{self.bands}-{self.pixscale_arcsec:g}-{self.size_pix}"
        )

    def _checked(self, reader: CutoutReader, path: Path, name: str) -> np.ndarray:
        """Decode the cutout file ``path`` and check its shape; FormatError naming ``name`` if bad.

        ``path`` may be a temporary download, so the reader's errors are renamed to ``name``.
        """
        try:
            image = np.asarray(reader(path), dtype=np.float32)
        except FormatError as err:
            raise FormatError(name, err.problem) from err
        expected = (len(self.bands), self.size_pix, self.size_pix)
        if image.shape != expected:
            raise ValueError(f"{name}: cutout shape {image.shape}, expected {expected}")
        return image

    def fetch_cutouts(
        self,
        ra_deg: np.ndarray,
        dec_deg: np.ndarray,
        cache: StorageLayout,
        concurrency: int = 8,
        policy: RetryPolicy | None = None,
        clock: RetryClock | None = None,
        reader: CutoutReader | None = None,
    ) -> CutoutBatch:
        """One cutout per position through at most ``concurrency`` parallel requests.

        The cap is shared with every other process of this user on this machine that
        fetches from the same host with the same cap (:class:`HostSlots`).

        ``reader`` decodes and checks a cutout (default
        ``astroclip_core.formats.legacysurvey.read_cutout``). See the module docstring.
        """
        ra_deg, dec_deg = np.asarray(ra_deg, np.float64), np.asarray(dec_deg, np.float64)
        if ra_deg.shape != dec_deg.shape or ra_deg.ndim != 1:
            raise ValueError(f"ra_deg {ra_deg.shape} and dec_deg {dec_deg.shape} must be equal 1-d")
        reader = reader or functools.partial(
            read_cutout, expect_bands=self.bands, expect_pixscale_arcsec=self.pixscale_arcsec
        )
        policy, clock = policy or RetryPolicy(), clock or RetryClock()
        keys = tuple(self.cutout_key(r, d) for r, d in zip(ra_deg, dec_deg, strict=True))
        jobs = [
            FetchJob(self.cutout_request_url(r, d), cache.cutout_cache(self.dr, self.layer, k))
            for r, d, k in zip(ra_deg, dec_deg, keys, strict=True)
        ]

        # The cap holds across this user's processes on this machine (and a Dask cluster).
        slots = HostSlots.for_url(self.cutout_url, concurrency)

        def one(job: FetchJob, session: requests.Session) -> tuple[FetchResult, np.ndarray | None]:
            # The validator decodes; the image of the file that passed (cached or fresh) is kept.
            # A damaged cached file fails it and is fetched again by fetch_file.
            decoded: list[np.ndarray] = []

            def validate(path: Path, url: str) -> None:
                decoded.append(self._checked(reader, path, url))

            with slots.slot():
                result = fetch_file(job.url, job.dest_url, validate, policy, session, clock)
            return result, decoded[-1] if result.ok else None

        outcomes = map_with_sessions(one, jobs, concurrency, lambda o: o[1] is not None, "cutouts")
        batch = self._assemble(outcomes, keys)
        log.info(
            "cutouts: %d ok, %d failed, %d with an all-zero band",
            int(batch.ok.sum()),
            batch.n_failed,
            batch.n_no_data,
        )
        return batch

    def _assemble(
        self, outcomes: Sequence[tuple[FetchResult, np.ndarray | None]], keys: tuple[str, ...]
    ) -> CutoutBatch:
        n, nb = len(outcomes), len(self.bands)
        ok = np.array([image is not None for _, image in outcomes], dtype=bool)
        images = np.zeros((int(ok.sum()), nb, self.size_pix, self.size_pix), dtype=np.float32)
        for k, i in enumerate(np.flatnonzero(ok)):
            images[k] = outcomes[i][1]
        # (N, B): a band with no survey coverage comes back as exact zeros
        no_data = np.zeros((n, nb), dtype=bool)
        no_data[ok] = ~np.any(images.reshape(len(images), nb, self.size_pix**2) != 0, axis=2)
        return CutoutBatch(
            images=images,
            ok=ok,
            reasons=tuple(r.reason if image is None else "" for r, image in outcomes),
            attempts=np.array([r.attempts for r, _ in outcomes], dtype=np.int32),
            from_cache=np.array([r.from_cache for r, _ in outcomes], dtype=bool),
            no_data_bands=no_data,
            keys=keys,
            urls=tuple(r.url for r, _ in outcomes),
        )
