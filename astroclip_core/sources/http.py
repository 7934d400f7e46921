"""HTTP GET with retries: exponential backoff with full jitter, and ``Retry-After`` honoured.

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

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

log = logging.getLogger(__name__)

T = TypeVar("T")

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


def _get_once(url: str, session: requests.Session, policy: RetryPolicy, clock: RetryClock) -> bytes:
    """One GET: the body on 200, TransientError on retryable failures, FetchError otherwise."""
    try:
        response = session.get(url, timeout=policy.timeout)
    except (requests.Timeout, requests.ConnectionError) as err:
        raise TransientError(f"{type(err).__name__}: {err}") from err
    except (
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.ContentDecodingError,
    ) as err:
        # urllib3 raises these when the connection closes before Content-Length bytes arrived.
        raise TransientError(f"truncated body ({type(err).__name__})") from err
    status = response.status_code
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(response.headers.get("Retry-After"), clock.now())
        raise TransientError(f"HTTP {status} {response.reason}", status, retry_after)
    if status != 200:
        raise FetchError(url, f"HTTP {status} {response.reason} (not retried)", status=status)
    body = response.content
    expected = response.headers.get("Content-Length", "")
    # with Content-Encoding the header counts compressed bytes, so it cannot be compared
    plain = not response.headers.get("Content-Encoding")
    if plain and expected.isdigit() and len(body) != int(expected):
        raise TransientError(f"truncated body: {len(body)} of {expected} bytes")
    return body


def http_get_bytes(
    url: str,
    policy: RetryPolicy,
    session: requests.Session | None = None,
    clock: RetryClock | None = None,
) -> tuple[bytes, int]:
    """GET ``url`` with retries; return (body, number of requests made).

    Raises :class:`FetchError` for a permanent HTTP status or when every attempt failed.
    """
    clock = clock or RetryClock()
    if session is None:
        with requests.Session() as own:
            return call_with_retries(lambda: _get_once(url, own, policy, clock), url, policy, clock)
    return call_with_retries(lambda: _get_once(url, session, policy, clock), url, policy, clock)
