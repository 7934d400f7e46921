"""A loopback HTTP server that injects the failures real survey servers produce.

Test support kept in the library so pipeline tests can reuse it::

    with FaultServer(static_backend(folder), FaultConfig(seed=1)) as server:
        fetch_file(server.url + "edr/...", dest, ...)

It answers from a *backend* (a static folder with Apache-style listings, a proxied upstream
base URL, or any callable) and, for a seeded fraction of requests, instead:

- ``error500``: HTTP 500;
- ``throttle429``: HTTP 429 with ``Retry-After: <retry_after_s>``;
- ``stall``: sleeps ``stall_s`` (set it longer than the client's read timeout) before answering;
- ``truncate``: sends the full ``Content-Length`` but only half the body, then closes;
- ``garbage``: HTTP 200 with bytes that are not FITS (at most once per URL).

Decisions are deterministic per (seed, request target, how many times that target was asked
for), so concurrency does not change which attempt of which URL fails. It is bounded: a target
is faulted on at most its first ``max_faults_per_path`` requests, so any client with more
attempts than that always gets through. Targets in ``always_corrupt`` get garbage every time.
"""

from __future__ import annotations

import hashlib
import html
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests

log = logging.getLogger(__name__)

FAULT_KINDS = ("error500", "throttle429", "stall", "truncate", "garbage")
GARBAGE = b"<html>this is not a FITS file</html>\n"


@dataclass(frozen=True)
class Response:
    """What a backend answers for one request target."""

    status: int
    body: bytes
    content_type: str = "application/octet-stream"


Backend = Callable[[str], Response]


@dataclass(frozen=True)
class FaultConfig:
    """Which faults, how often, and how bad. ``fraction=0`` makes a clean server."""

    seed: int = 0
    fraction: float = 0.2
    kinds: tuple[str, ...] = FAULT_KINDS
    retry_after_s: float = 1.0
    stall_s: float = 0.5
    max_faults_per_path: int = 2
    always_corrupt: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"FaultConfig.fraction={self.fraction} must be in [0, 1]")
        unknown = set(self.kinds) - set(FAULT_KINDS)
        if unknown or not self.kinds:
            raise ValueError(
                f"FaultConfig.kinds {self.kinds} must be a non-empty subset of {FAULT_KINDS}"
            )

    def decide(self, target: str, attempt: int) -> str | None:
        """The fault for the ``attempt``-th (0-based) request of ``target``, or None."""
        if attempt >= self.max_faults_per_path:
            return None
        digest = hashlib.blake2b(f"{self.seed}|{target}|{attempt}".encode(), digest_size=8).digest()
        draw = int.from_bytes(digest[:4], "big") / 2**32
        if draw >= self.fraction:
            return None
        return self.kinds[int.from_bytes(digest[4:], "big") % len(self.kinds)]


def _listing(rel: str, folder: Path) -> bytes:
    """An Apache-autoindex-like page: parent link, sort link, one link per entry."""
    links = ['<a href="?C=N;O=D">Name</a>', '<a href="../">Parent Directory</a>']
    for entry in sorted(folder.iterdir()):
        name = entry.name + ("/" if entry.is_dir() else "")
        links.append(f'<a href="{html.escape(name)}">{html.escape(name)}</a>')
    title = html.escape(f"Index of /{rel}")
    return f"<html><head><title>{title}</title></head><body><h1>{title}</h1>\n{'<br>'.join(links)}\n</body></html>".encode()


def static_backend(folder: str | Path) -> Backend:
    """Serve files under ``folder``; folders get an Apache-style listing; anything else 404."""
    root = Path(folder).resolve()

    def answer(target: str) -> Response:
        rel = unquote(urlsplit(target).path).lstrip("/")
        path = (root / rel).resolve()
        if not path.is_relative_to(root) or not path.exists():
            return Response(404, b"not found\n", "text/plain")
        if path.is_dir():
            return Response(200, _listing(rel, path), "text/html")
        return Response(200, path.read_bytes())

    return answer


def proxy_backend(upstream_url: str, timeout_s: float = 30.0) -> Backend:
    """Forward each request target to ``upstream_url`` (a base URL) and relay its answer."""
    base = upstream_url.rstrip("/")

    def answer(target: str) -> Response:
        reply = requests.get(base + target, timeout=timeout_s)
        kind = reply.headers.get("Content-Type", "application/octet-stream")
        return Response(reply.status_code, reply.content, kind)

    return answer


class _Handler(BaseHTTPRequestHandler):
    server: _FaultHTTPServer

    def log_message(self, format: str, *args: object) -> None:
        log.debug("fault server: " + format, *args)

    def do_GET(self) -> None:
        fault = self.server.owner.next_fault(self.path)
        try:
            self._answer(fault)
        except (BrokenPipeError, ConnectionResetError):
            # the client gave up (e.g. timed out during a stall); nothing left to send
            self.close_connection = True

    def _answer(self, fault: str | None) -> None:
        config = self.server.owner.config
        if fault == "error500":
            return self._send(Response(500, b"injected server error\n", "text/plain"))
        if fault == "throttle429":
            return self._send(
                Response(429, b"slow down\n", "text/plain"),
                {"Retry-After": f"{config.retry_after_s:g}"},
            )
        if fault == "garbage":
            return self._send(Response(200, GARBAGE))
        if fault == "stall":
            time.sleep(config.stall_s)
        response = self.server.owner.backend(self.path)
        if fault == "truncate" and response.status == 200 and len(response.body) > 1:
            return self._send(response, body=response.body[: len(response.body) // 2])
        return self._send(response)

    def _send(
        self, response: Response, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> None:
        """Send ``response``; ``body`` (shorter) replaces what is written after the headers."""
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body if body is None else body)
        self.wfile.flush()
        self.close_connection = True


class _FaultHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: FaultServer


class FaultServer:
    """Loopback (127.0.0.1, ephemeral port) fault-injecting server; a context manager.

    ``url`` is the base URL with a trailing slash. ``requests_for(target)`` and
    ``request_count`` count requests; ``faults`` counts the faults served by kind.
    """

    def __init__(self, backend: Backend, config: FaultConfig | None = None) -> None:
        self.backend = backend
        self.config = config or FaultConfig()
        self.faults: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()
        self._garbage_sent: set[str] = set()
        self._lock = threading.Lock()
        self._httpd: _FaultHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/``."""
        if self._httpd is None:
            raise RuntimeError("FaultServer is not running; use it as a context manager")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    @property
    def request_count(self) -> int:
        """Requests received so far, all targets together."""
        with self._lock:
            return sum(self._counts.values())

    def requests_for(self, target: str) -> int:
        """Requests received so far for one target (path plus query, e.g. ``/edr/x.fits``)."""
        with self._lock:
            return self._counts[target]

    def next_fault(self, target: str) -> str | None:
        """Count a request for ``target`` and decide its fault (None: answer normally)."""
        with self._lock:
            attempt = self._counts[target]
            self._counts[target] += 1
            if urlsplit(target).path in self.config.always_corrupt:
                fault: str | None = "garbage"
            else:
                fault = self.config.decide(target, attempt)
                if fault == "garbage" and target in self._garbage_sent:
                    fault = "error500"
            if fault == "garbage":
                self._garbage_sent.add(target)
            if fault is not None:
                self.faults[fault] += 1
        return fault

    def __enter__(self) -> FaultServer:
        self._httpd = _FaultHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # so that leaving the context is quick
            name="fault-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._httpd = self._thread = None
