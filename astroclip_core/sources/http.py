"""HTTP GET with retries: exponential backoff with full jitter, and ``Retry-After`` honoured.

Bodies are streamed: :func:`http_download` writes a file to disk in chunks of
:data:`CHUNK_BYTES`, so a 2 GB catalogue costs megabytes of memory, not gigabytes. An attempt
that breaks off mid-body is resumed after the bytes it kept when the server takes byte ranges,
else restarted from the first byte (both count as one more attempt).

Which failures are retried (the contract every caller relies on):

- HTTP 429 and 5xx, connection errors, connect/read timeouts, and bodies shorter than their
  ``Content-Length`` are *transient*: retried up to ``RetryPolicy.max_attempts`` in total.
  The wait before attempt ``k+1`` is ``Retry-After`` when the server sent one (seconds or an
  HTTP date, capped at ``retry_after_max_s``), else a uniform draw from
  ``[0, min(backoff_max_s, backoff_base_s * 2**(k-1))]`` ("full jitter", which spreads the
  retries of many clients instead of synchronising them).
- Any other 4xx is *permanent*: :class:`FetchError` at once, naming the URL and the status.

The random generator and the sleep function live in a :class:`RetryClock` so tests can
seed the jitter and record the waits instead of sleeping.
"""

from __future__ import annotations

import contextlib
import email.utils
import io
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

log = logging.getLogger(__name__)

T = TypeVar("T")

# Bytes read from the network and written to disk at a time: bounds a download's memory.
CHUNK_BYTES = 1 << 20

# Query parameters that may carry credentials; their values never reach a log or an error.
_SECRET_PARAMS = ("token", "key", "signature", "password", "secret", "credential", "x-amz-")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one remote file.

    ``max_attempts`` counts every request of one download (the first included);
    ``corrupt_refetches`` is how many whole extra downloads a file that fails validation gets.
    """

    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 60.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    corrupt_refetches: int = 1

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts={self.max_attempts} must be >= 1")
        if self.corrupt_refetches < 0:
            raise ValueError(f"RetryPolicy.corrupt_refetches={self.corrupt_refetches} must be >= 0")
        for name in ("backoff_base_s", "backoff_max_s", "retry_after_max_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"RetryPolicy.{name}={getattr(self, name)} must be >= 0")
        for name in ("connect_timeout_s", "read_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"RetryPolicy.{name}={getattr(self, name)} must be > 0")

    @property
    def timeout(self) -> tuple[float, float]:
        """``(connect, read)`` timeouts in seconds, as ``requests`` takes them."""
        return (self.connect_timeout_s, self.read_timeout_s)

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** (attempt - 1))
        return rng.uniform(0.0, ceiling)


@dataclass(frozen=True)
class RetryClock:
    """The injectable side of retrying: jitter source, sleep, and wall clock (for HTTP dates)."""

    rng: random.Random = field(default_factory=random.Random)
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], datetime] = lambda: datetime.now(UTC)


class FetchError(RuntimeError):
    """A remote file could not be fetched; the message names the (redacted) URL and why."""

    def __init__(
        self, url: str, problem: str, status: int | None = None, attempts: int = 1
    ) -> None:
        self.url = redact_url(url)
        self.problem = problem
        self.status = status
        self.attempts = attempts
        super().__init__(f"{self.url}: {problem}")


class TransientError(Exception):
    """One attempt failed in a way worth retrying (raised inside :func:`call_with_retries`)."""

    def __init__(
        self, problem: str, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        self.problem = problem
        self.status = status
        self.retry_after_s = retry_after_s
        super().__init__(problem)


def redact_url(url: str) -> str:
    """``url`` without user info and with secret-looking query values replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = urlencode(
        [
            (k, "***" if any(s in k.lower() for s in _SECRET_PARAMS) else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="/:",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date); None if absent/invalid."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def call_with_retries(
    op: Callable[[], T], url: str, policy: RetryPolicy, clock: RetryClock
) -> tuple[T, int]:
    """Run ``op`` until it returns, retrying :class:`TransientError`; return (value, attempts).

    Raises :class:`FetchError` once ``policy.max_attempts`` attempts have failed. Any other
    exception from ``op`` (a :class:`FetchError` for a permanent failure, a bug) propagates.
    """
    for attempt in range(1, policy.max_attempts + 1):
        try:
            return op(), attempt
        except FetchError as err:
            err.attempts = attempt
            raise
        except TransientError as err:
            if attempt == policy.max_attempts:
                raise FetchError(
                    url,
                    f"gave up after {attempt} attempts; last error: {err.problem}",
                    status=err.status,
                    attempts=attempt,
                ) from err
            if err.retry_after_s is not None:
                wait_s = min(err.retry_after_s, policy.retry_after_max_s)
            else:
                wait_s = policy.backoff_s(attempt, clock.rng)
            log.debug(
                "attempt %d for %s failed (%s); retrying in %.2f s",
                attempt,
                redact_url(url),
                err.problem,
                wait_s,
            )
            clock.sleep(wait_s)
    raise AssertionError("unreachable: the loop returns or raises")


def _restart(out: BinaryIO) -> int:
    """Empty ``out`` so that the next bytes written are the file's first; return 0."""
    out.seek(0)
    out.truncate()
    return 0


@dataclass
class _Resume:
    """What one download learnt from the server's first full answer, to resume after it.

    A broken-off attempt is resumed with ``Range: bytes=<kept>-`` only when that answer said
    ``Accept-Ranges: bytes``, gave a plain (not Content-Encoded) ``Content-Length``, and the
    kept bytes are fewer; ``If-Range`` carries its strong ETag or Last-Modified, so a file that
    changed meanwhile comes back whole (200) instead of being spliced.
    """

    total_bytes: int | None = None
    if_range: str | None = None

    def learn(self, response: requests.Response) -> None:
        """Remember a 200 answer's size and validator when the server accepts byte ranges."""
        headers = response.headers
        length = headers.get("Content-Length", "")
        ranges = headers.get("Accept-Ranges", "").strip().lower() == "bytes"
        plain = not headers.get("Content-Encoding")
        self.total_bytes = int(length) if ranges and plain and length.isdigit() else None
        etag = headers.get("ETag")
        strong = etag if etag and not etag.startswith("W/") else None
        self.if_range = strong or headers.get("Last-Modified")

    def headers(self, kept_bytes: int) -> dict[str, str] | None:
        """Request headers resuming after ``kept_bytes``; None when the file must restart."""
        if kept_bytes <= 0 or self.total_bytes is None or kept_bytes >= self.total_bytes:
            return None
        headers = {"Range": f"bytes={kept_bytes}-", "Accept-Encoding": "identity"}
        if self.if_range:
            headers["If-Range"] = self.if_range
        return headers

    def check_partial(self, response: requests.Response, kept_bytes: int) -> None:
        """TransientError (and no more resuming) unless a 206 continues at ``kept_bytes``."""
        got = response.headers.get("Content-Range", "")
        expected = f"bytes {kept_bytes}-{self.total_bytes - 1}/{self.total_bytes}"
        if got.strip() != expected or response.headers.get("Content-Encoding"):
            self.total_bytes = None
            raise TransientError(f"resume answered with Content-Range {got!r}, not {expected!r}")


def _open_response(
    url: str, session: requests.Session, policy: RetryPolicy, headers: dict[str, str] | None
) -> requests.Response:
    """Send the GET and return once its headers arrived; TransientError on network failures."""
    try:
        return session.get(url, timeout=policy.timeout, stream=True, headers=headers)
    except (requests.Timeout, requests.ConnectionError) as err:
        raise TransientError(f"{type(err).__name__}: {err}") from err
    except (
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.ContentDecodingError,
    ) as err:
        raise TransientError(f"truncated body ({type(err).__name__})") from err


def _copy_body(response: requests.Response, out: BinaryIO) -> int:
    """Write the body to ``out`` chunk by chunk; return its size. Network errors are transient.

    What was written before an error stays in ``out`` (the next attempt may resume after it).
    Only network errors are caught: a failed write (a full disk) propagates.
    """
    written = 0
    try:
        for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
            out.write(chunk)
            written += len(chunk)
    except (
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.ContentDecodingError,
    ) as err:
        # urllib3 raises these when the connection closes before Content-Length bytes arrived.
        raise TransientError(
            f"truncated body after {written} bytes ({type(err).__name__})"
        ) from err
    except (requests.Timeout, requests.ConnectionError) as err:
        raise TransientError(f"body broke off after {written} bytes: {err}") from err
    return written


def _download_once(
    url: str,
    out: BinaryIO,
    session: requests.Session,
    policy: RetryPolicy,
    clock: RetryClock,
    resume: _Resume,
) -> int:
    """One GET appended to ``out`` (resumed or from the start); return the file's size so far.

    TransientError on retryable failures, FetchError on a permanent status.
    """
    kept = out.tell()
    headers = resume.headers(kept)
    if headers is None:
        kept = _restart(out)
    with _open_response(url, session, policy, headers) as response:
        status = response.status_code
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), clock.now())
            raise TransientError(f"HTTP {status} {response.reason}", status, retry_after)
        if status == 416 and headers is not None:
            resume.total_bytes = None  # the file shrank or moved: fetch it whole next time
            raise TransientError(f"HTTP 416 resuming at byte {kept}; restarting")
        if status == 206 and headers is not None:
            resume.check_partial(response, kept)
        elif status == 200:
            kept = _restart(out)
            resume.learn(response)
        else:
            raise FetchError(url, f"HTTP {status} {response.reason} (not retried)", status=status)
        written = _copy_body(response, out)
        expected = response.headers.get("Content-Length", "")
        # with Content-Encoding the header counts compressed bytes, so it cannot be compared
        plain = not response.headers.get("Content-Encoding")
    if plain and expected.isdigit() and written != int(expected):
        raise TransientError(f"truncated body: {written} of {expected} bytes")
    return kept + written


def http_download(
    url: str,
    out: BinaryIO,
    policy: RetryPolicy,
    session: requests.Session | None = None,
    clock: RetryClock | None = None,
) -> tuple[int, int]:
    """GET ``url`` into the binary file ``out`` in chunks, with retries; return (bytes, requests).

    Never holds the body in memory: each chunk of :data:`CHUNK_BYTES` is written to ``out``
    (opened ``w+b``; emptied first). An attempt that breaks off mid-body keeps what it wrote,
    and the next one resumes after it with a Range request when the server allows it (see
    :class:`_Resume`), else ``out`` is emptied and the file fetched from its start. Raises
    :class:`FetchError` for a permanent HTTP status or when every attempt failed.
    """
    clock = clock or RetryClock()
    _restart(out)
    resume = _Resume()
    with contextlib.ExitStack() as stack:
        if session is None:
            session = stack.enter_context(requests.Session())
        return call_with_retries(
            lambda: _download_once(url, out, session, policy, clock, resume), url, policy, clock
        )


def http_get_bytes(
    url: str,
    policy: RetryPolicy,
    session: requests.Session | None = None,
    clock: RetryClock | None = None,
) -> tuple[bytes, int]:
    """GET ``url`` with retries; return (body, number of requests made).

    For small answers (folder listings, JSON): the body is returned in memory. Files go
    through :func:`http_download`, which writes them to disk in chunks. Raises
    :class:`FetchError` for a permanent HTTP status or when every attempt failed.
    """
    buffer = io.BytesIO()
    _, attempts = http_download(url, buffer, policy, session, clock)
    return buffer.getvalue(), attempts
