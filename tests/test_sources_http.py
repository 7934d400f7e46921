"""Retry behaviour of astroclip_core.sources.http against the loopback fault server."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from test_sources_support import RecordingSleep, small_fits

from astroclip_core.sources.faults import FaultConfig, FaultServer, Response
from astroclip_core.sources.http import (
    FetchError,
    RetryClock,
    RetryPolicy,
    http_get_bytes,
    parse_retry_after,
    redact_url,
)

FAST = RetryPolicy(
    max_attempts=4, backoff_base_s=0.1, backoff_max_s=0.4, retry_after_max_s=5.0,
    connect_timeout_s=2.0, read_timeout_s=2.0,
)  # fmt: skip
BODY = small_fits(seed=7)


def _ok(target: str) -> Response:
    return Response(200, BODY) if target == "/file.fits" else Response(404, b"missing\n")


def _always(kind: str, **kw: object) -> FaultConfig:
    """Every request of a target faults with ``kind`` for its first two attempts."""
    return FaultConfig(fraction=1.0, kinds=(kind,), max_faults_per_path=2, **kw)


def test_backoff_is_full_jitter_within_exponential_ceiling() -> None:
    policy = RetryPolicy(backoff_base_s=1.0, backoff_max_s=5.0)
    rng = random.Random(3)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
        draws = [policy.backoff_s(attempt, rng) for _ in range(200)]
        assert min(draws) >= 0.0 and max(draws) <= ceiling
        assert max(draws) > 0.5 * ceiling  # spread over the range, not a constant
    again = [RetryPolicy().backoff_s(2, random.Random(11)) for _ in range(2)]
    assert again[0] == again[1]  # seeded jitter is reproducible


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="read_timeout_s"):
        RetryPolicy(read_timeout_s=0)


def test_parse_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_redact_url_hides_tokens_and_user_info() -> None:
    shown = redact_url("https://user:pw@host/x.fits?ra=1.5&token=abc123&X-Amz-Signature=zz")
    assert "abc123" not in shown and "pw" not in shown and "zz" not in shown
    assert shown.startswith("https://host/x.fits?ra=1.5")


def test_retry_after_is_honoured_and_capped() -> None:
    sleep = RecordingSleep()
    with FaultServer(_ok, _always("throttle429", retry_after_s=3.0)) as server:
        body, attempts = http_get_bytes(
            server.url + "file.fits", FAST, clock=RetryClock(random.Random(0), sleep)
        )
    assert body == BODY and attempts == 3
    assert sleep.waits == [3.0, 3.0]
    capped = RecordingSleep()
    policy = RetryPolicy(max_attempts=4, retry_after_max_s=1.5, read_timeout_s=2.0)
    with FaultServer(_ok, _always("throttle429", retry_after_s=3.0)) as server:
        http_get_bytes(server.url + "file.fits", policy, clock=RetryClock(random.Random(0), capped))
    assert capped.waits == [1.5, 1.5]


def test_server_errors_back_off_with_seeded_jitter() -> None:
    waits = []
    for _ in range(2):
        sleep = RecordingSleep()
        with FaultServer(_ok, _always("error500")) as server:
            body, attempts = http_get_bytes(
                server.url + "file.fits", FAST, clock=RetryClock(random.Random(5), sleep)
            )
        assert body == BODY and attempts == 3
        assert 0 <= sleep.waits[0] <= 0.1 and 0 <= sleep.waits[1] <= 0.2
        waits.append(sleep.waits)
    assert waits[0] == waits[1]


@pytest.mark.parametrize("kind", ["truncate", "stall"])
def test_truncated_and_stalled_responses_are_retried(kind: str) -> None:
    policy = RetryPolicy(max_attempts=3, backoff_base_s=0.0, read_timeout_s=0.3)
    with FaultServer(_ok, _always(kind, stall_s=0.6)) as server:
        body, attempts = http_get_bytes(server.url + "file.fits", policy)
        assert server.faults[kind] == 2
    assert body == BODY and attempts == 3


def test_gives_up_after_max_attempts_naming_the_url() -> None:
    config = FaultConfig(fraction=1.0, kinds=("error500",), max_faults_per_path=10)
    sleep = RecordingSleep()
    with FaultServer(_ok, config) as server:
        with pytest.raises(FetchError, match=r"file\.fits: gave up after 4 attempts") as info:
            http_get_bytes(server.url + "file.fits", FAST, clock=RetryClock(sleep=sleep))
        assert server.requests_for("/file.fits") == 4
    assert info.value.status == 500 and info.value.attempts == 4
    assert len(sleep.waits) == 3


def test_404_fails_fast_with_url_and_status() -> None:
    sleep = RecordingSleep()
    with FaultServer(_ok, FaultConfig(fraction=0.0)) as server:
        with pytest.raises(FetchError, match=r"missing\.fits: HTTP 404") as info:
            http_get_bytes(server.url + "missing.fits", FAST, clock=RetryClock(sleep=sleep))
        assert server.requests_for("/missing.fits") == 1
    assert info.value.status == 404 and info.value.attempts == 1
    assert sleep.waits == []
