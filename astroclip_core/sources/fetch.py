"""Fetch remote files into the cache: validated, written atomically, never fetched twice.

The contract of :func:`fetch_file`:

1. If ``dest_url`` exists and passes ``validate`` it is returned as a cache hit and nothing
   is requested. Files are only ever renamed into place after they were validated, but a
   disk, a copy or a hand can damage them later: a cached file that fails ``validate`` is
   deleted (with a warning) and fetched again as in 2, so the cache heals itself and a bad
   cached file is never recorded as a failure. Without a validator the cached file is
   trusted as it is.
2. Otherwise the file is streamed, in chunks, to a temporary file (HTTP(S) with retries,
   ``s3://`` anonymously through s3fs, any other fsspec URL through fsspec), checked on disk
   by ``validate``, and only then put at ``dest_url``: renamed into place when the cache is
   local, uploaded when it is remote (see :func:`astroclip_core.fsio.staged_file`). No file
   is ever held whole in memory, so a 2 GB catalogue costs megabytes of RAM. A killed
   process leaves only the temporary, never a half-written ``dest_url``, and the next run
   sweeps it away.
3. A download that fails validation is downloaded again ``policy.corrupt_refetches`` times
   (once by default). If it is still corrupt, or the remote fails permanently (a 4xx, retries
   exhausted), the result has ``ok=False`` and a ``reason``; nothing is written and the caller
   goes on. Failures become rows of :func:`failures_table`. Only a file that is bad after a
   fresh download is a failure.

A cache hit with a validator costs one read of the cached file (a remote cache entry is
first copied to a local temporary, in chunks).

Validators take ``(path, url)``: the local path of the file on disk and the name to report,
and raise ``ValueError`` (``astroclip_core.formats.FormatError`` is one) when the file is not
the expected one; e.g. ``lambda path, url: read_cutout(path)``. A validator of a large file
must not read it whole: :func:`fits_validator` reads only the headers.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

import fsspec
import pyarrow as pa
import requests
from astropy.io import fits as afits
from astropy.utils.exceptions import AstropyUserWarning

from astroclip_core import fsio
from astroclip_core.formats import FormatError
from astroclip_core.sources.http import (
    FetchError,
    RetryClock,
    RetryPolicy,
    TransientError,
    call_with_retries,
    http_download,
    redact_url,
)
from astroclip_core.tables.schemas import FAILURES_SCHEMA

log = logging.getLogger(__name__)

Validator = Callable[[Path, str], None]
T = TypeVar("T")
R = TypeVar("R")

FITS_MAGIC = b"SIMPLE  ="
# Bytes per read from an object store or other fsspec source: each is one ranged GET on s3,
# so reads are larger than HTTP chunks to amortise the request latency; bounds memory.
FSSPEC_CHUNK_BYTES = 16 << 20
# Environment variables naming a custom S3 endpoint (moto in tests, a mirror in production).
S3_ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


@dataclass(frozen=True)
class FailureRecord:
    """One object that could not be fetched: what it was, where from, why, after how many requests."""

    kind: str
    key: str
    url: str
    reason: str
    attempts: int


def failures_table(records: Iterable[FailureRecord]) -> pa.Table:
    """The per-partition failures table (columns kind, key, url, reason, attempts)."""
    rows = list(records)
    return pa.table(
        {
            "kind": pa.array([r.kind for r in rows], pa.string()),
            "key": pa.array([r.key for r in rows], pa.string()),
            "url": pa.array([redact_url(r.url) for r in rows], pa.string()),
            "reason": pa.array([r.reason for r in rows], pa.string()),
            "attempts": pa.array([r.attempts for r in rows], pa.int32()),
        },
        schema=FAILURES_SCHEMA,
    )


@dataclass(frozen=True)
class FetchResult:
    """Outcome of one :func:`fetch_file`.

    ``attempts`` counts the requests made (0 for a cache hit); ``status`` is the HTTP status
    of a permanent failure (404 also for a missing s3/local file); ``data`` holds the file's
    bytes only when the caller asked for them with ``keep_data=True``.
    """

    url: str
    dest_url: str
    ok: bool
    reason: str = ""
    attempts: int = 0
    from_cache: bool = False
    n_bytes: int = 0
    status: int | None = None
    data: bytes | None = field(default=None, repr=False, compare=False)

    def failure(self, kind: str, key: str) -> FailureRecord:
        """This failed result as a row of the failures table."""
        if self.ok:
            raise ValueError(f"{self.url} was fetched successfully; it is not a failure")
        return FailureRecord(kind, key, self.url, self.reason, self.attempts)

    def raise_for_failure(self) -> None:
        """Raise :class:`FetchError` when the fetch failed (for callers that cannot go on)."""
        if not self.ok:
            raise FetchError(self.url, self.reason, status=self.status, attempts=self.attempts)

    def cached_path(self) -> str:
        """``dest_url`` of a successful fetch; :class:`FetchError` when it failed."""
        self.raise_for_failure()
        return self.dest_url


def fits_validator(required_hdus: Sequence[str] = (), min_hdus: int = 1) -> Validator:
    """A validator for a FITS file: the magic, every HDU's data complete, the named HDUs present.

    It takes a path (or, for small in-memory files, the bytes) and reads only the headers,
    seeking past each HDU's data, so it suits files of any size; the full readers in
    ``astroclip_core.formats`` can be passed instead where the caller wants more.
    """
    required = tuple(required_hdus)

    def validate(source: Path | bytes, name: str) -> None:
        with ExitStack() as stack:
            if isinstance(source, bytes | bytearray | memoryview):
                fh: BinaryIO = io.BytesIO(source)
                size = len(source)
            else:
                fh = stack.enter_context(open(source, "rb"))
                size = os.fstat(fh.fileno()).st_size
            _check_fits(fh, size, name, required, min_hdus)

    return validate


def _check_fits(
    fh: BinaryIO, size: int, name: str, required: tuple[str, ...], min_hdus: int
) -> None:
    """The checks of :func:`fits_validator` on an open file of ``size`` bytes."""
    head = fh.read(16)
    if not head.startswith(FITS_MAGIC):
        raise FormatError(name, f"not a FITS file (starts with {head!r})")
    fh.seek(0)
    try:
        with warnings.catch_warnings():
            # astropy warns about truncation; the check below turns it into an error
            warnings.simplefilter("ignore", AstropyUserWarning)
            with afits.open(fh, memmap=False) as hdul:
                spans = [(h.name, h.fileinfo()["datLoc"] + h.size) for h in hdul]
    except OSError as err:
        raise FormatError(name, f"cannot parse FITS headers: {err}") from err
    for hdu_name, end in spans:
        if end > size:
            raise FormatError(
                name, f"truncated: HDU {hdu_name} ends at byte {end}, file has {size}"
            )
    if len(spans) < min_hdus:
        raise FormatError(name, f"{len(spans)} HDU(s), expected at least {min_hdus}")
    missing = sorted(set(required) - {n for n, _ in spans})
    if missing:
        raise FormatError(name, f"missing HDU(s) {missing}")


def s3_endpoint_from_env() -> str | None:
    """A custom S3 endpoint from ``$AWS_ENDPOINT_URL_S3`` or ``$AWS_ENDPOINT_URL``, else None."""
    for name in S3_ENDPOINT_ENVS:
        if os.environ.get(name):
            return os.environ[name]
    return None


def s3_filesystem(
    endpoint_url: str | None = None, policy: RetryPolicy | None = None
) -> fsspec.AbstractFileSystem:
    """Anonymous s3fs filesystem (public buckets such as ``s3://desidata``), optional endpoint."""
    policy = policy or RetryPolicy()
    endpoint_url = endpoint_url or s3_endpoint_from_env()
    return fsspec.filesystem(
        "s3",
        anon=True,
        client_kwargs={"endpoint_url": endpoint_url} if endpoint_url else {},
        config_kwargs={
            "connect_timeout": policy.connect_timeout_s,
            "read_timeout": policy.read_timeout_s,
        },
    )


@contextmanager
def _fsspec_errors(url: str) -> Iterator[None]:
    """Missing/forbidden remote files are permanent failures, other I/O errors transient."""
    try:
        yield
    except FileNotFoundError as err:
        raise FetchError(url, "not found (not retried)", status=404) from err
    except PermissionError as err:
        raise FetchError(url, f"access denied (not retried): {err}", status=403) from err
    except (OSError, TimeoutError) as err:
        raise TransientError(f"{type(err).__name__}: {err}") from err


def _fsspec_download_once(fs: fsspec.AbstractFileSystem, path: str, url: str, out: BinaryIO) -> int:
    """One fsspec read into ``out``, resumed after what ``out`` already holds; return its size.

    Only reads are translated into FetchError/TransientError; a failed write propagates.
    """
    kept = out.tell()
    with _fsspec_errors(url):
        src = fs.open(path, "rb", block_size=FSSPEC_CHUNK_BYTES, cache_type="none")
    with src:
        size = getattr(src, "size", None)  # known to s3fs and other buffered files
        if not isinstance(size, int) or kept > size:
            kept = 0
            out.seek(0)
            out.truncate()
        with _fsspec_errors(url):
            src.seek(kept)
        while True:
            with _fsspec_errors(url):
                chunk = src.read(FSSPEC_CHUNK_BYTES)
            if not chunk:
                break
            out.write(chunk)
            kept += len(chunk)
    if isinstance(size, int) and kept != size:
        raise TransientError(f"truncated: read {kept} of {size} bytes")
    return kept


def download_to(
    url: str,
    out: BinaryIO,
    policy: RetryPolicy,
    session: requests.Session | None = None,
    clock: RetryClock | None = None,
    s3_endpoint_url: str | None = None,
) -> tuple[int, int]:
    """Stream a remote file into the binary file ``out``, with retries; (bytes, requests made).

    ``out`` (opened ``w+b``) is emptied first and filled chunk by chunk, never holding the
    file in memory; an attempt that breaks off is resumed after what it wrote where the
    source allows, else restarted. ``http(s)://`` goes through ``requests``
    (:func:`~astroclip_core.sources.http.http_download`); ``s3://`` through anonymous s3fs;
    anything else (a local path, ``file://``, ``memory://``) through fsspec. Raises
    :class:`FetchError`.
    """
    clock = clock or RetryClock()
    out.seek(0)
    out.truncate()
    if url.startswith(("http://", "https://")):
        return http_download(url, out, policy, session, clock)
    if url.startswith("s3://"):
        fs, path = s3_filesystem(s3_endpoint_url, policy), url[len("s3://") :]
    else:
        fs, path = fsio.filesystem(url)
    return call_with_retries(lambda: _fsspec_download_once(fs, path, url, out), url, policy, clock)


def fetch_file(
    url: str,
    dest_url: str,
    validate: Validator | None = None,
    policy: RetryPolicy | None = None,
    session: requests.Session | None = None,
    clock: RetryClock | None = None,
    *,
    s3_endpoint_url: str | None = None,
    keep_data: bool = False,
) -> FetchResult:
    """Fetch ``url`` into ``dest_url`` unless it is cached; see the module docstring for the contract.

    ``keep_data=True`` also returns the file's bytes in :attr:`FetchResult.data` (read from
    disk once it is validated): only for files that fit in memory.
    """
    policy = policy or RetryPolicy()
    shown = redact_url(url)
    cached = _cache_hit(shown, dest_url, validate, keep_data)
    if cached is not None:
        return cached
    attempts, problem = 0, ""
    with fsio.staged_file(dest_url) as staged:
        for round_no in range(1 + policy.corrupt_refetches):
            try:
                n_bytes, made = download_to(url, staged.fh, policy, session, clock, s3_endpoint_url)
            except FetchError as err:
                return FetchResult(
                    shown, dest_url, False, str(err), attempts + err.attempts, status=err.status
                )
            attempts += made
            staged.fh.flush()
            if validate is not None:
                try:
                    validate(staged.path, shown)
                except ValueError as err:
                    problem = str(err)
                    log.warning("download %d of %s is corrupt: %s", round_no + 1, shown, problem)
                    continue
            data = staged.path.read_bytes() if keep_data else None
            staged.commit()
            return FetchResult(shown, dest_url, True, attempts=attempts, n_bytes=n_bytes, data=data)
    reason = f"{shown}: corrupt after {1 + policy.corrupt_refetches} downloads: {problem}"
    return FetchResult(shown, dest_url, False, reason, attempts)


def _cache_hit(
    shown: str, dest_url: str, validate: Validator | None, keep_data: bool
) -> FetchResult | None:
    """The result for a usable cached ``dest_url``; None when there is none (a bad one is deleted)."""
    if not fsio.exists(dest_url):
        return None
    try:
        if validate is not None:
            with fsio.local_copy(dest_url) as local:
                validate(local, dest_url)
        fs, path = fsio.filesystem(dest_url)
        n_bytes = int(fs.size(path))
        data = fsio.read_bytes(dest_url) if keep_data else None
        if fsio.is_local(dest_url):
            # a hit renews the file for the raw cache's size cap (least recently used out)
            os.utime(path)
    except FileNotFoundError:  # a concurrent run found it damaged and deleted it (or a cap)
        return None
    except ValueError as err:
        log.warning("cached %s is damaged (%s); deleting it and fetching it again", dest_url, err)
        fsio.remove_file(dest_url)
        return None
    return FetchResult(shown, dest_url, True, from_cache=True, n_bytes=n_bytes, data=data)


@dataclass(frozen=True)
class FetchJob:
    """One file of a batch: remote URL and cache destination."""

    url: str
    dest_url: str


class _Progress:
    """Thread-safe 'fetched 120/300 cutouts (3 failed)' logging, about every tenth."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total = label, total
        self.done = self.failed = 0
        self.every = max(1, total // 10)
        self.lock = threading.Lock()

    def update(self, ok: bool) -> None:
        with self.lock:
            self.done += 1
            self.failed += 0 if ok else 1
            if self.done % self.every == 0 or self.done == self.total:
                log.info(
                    "fetched %d/%d %s (%d failed)", self.done, self.total, self.label, self.failed
                )


def map_with_sessions(
    fn: Callable[[T, requests.Session], R],
    items: Sequence[T],
    concurrency: int,
    ok_of: Callable[[R], bool],
    label: str,
) -> list[R]:
    """``fn(item, session)`` for every item on at most ``concurrency`` threads, in item order.

    Each worker thread gets its own ``requests.Session`` (sessions are not thread-safe, and
    one per thread keeps connections alive); progress is logged as items complete.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency} must be >= 1")
    local, sessions, lock = threading.local(), [], threading.Lock()
    progress = _Progress(label, len(items))

    def run(item: T) -> R:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            with lock:
                sessions.append(local.session)
        result = fn(item, local.session)
        progress.update(ok_of(result))
        return result

    try:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fetch") as pool:
            return list(pool.map(run, items))
    finally:
        for session in sessions:
            session.close()


def fetch_all(
    jobs: Sequence[FetchJob],
    validate: Validator | None = None,
    policy: RetryPolicy | None = None,
    concurrency: int = 4,
    clock: RetryClock | None = None,
    *,
    s3_endpoint_url: str | None = None,
    label: str = "files",
) -> list[FetchResult]:
    """:func:`fetch_file` for every job on at most ``concurrency`` threads; results in job order."""
    policy, clock = policy or RetryPolicy(), clock or RetryClock()

    def one(job: FetchJob, session: requests.Session) -> FetchResult:
        return fetch_file(
            job.url, job.dest_url, validate, policy, session, clock, s3_endpoint_url=s3_endpoint_url
        )

    return map_with_sessions(one, jobs, concurrency, lambda r: r.ok, label)
