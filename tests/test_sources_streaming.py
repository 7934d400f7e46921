"""Downloads are streamed to disk: bounded memory, resume or restart, nothing half-written.

The server here generates its files on the fly (a FITS header, then zeros), so neither side
of a 1 GB download needs 1 GB of memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from astropy.io import fits as afits

from astroclip_core.sources.fetch import fetch_file, fits_validator
from astroclip_core.sources.http import RetryPolicy

FITS_BLOCK = 2880
ZEROS = bytes(1 << 20)
ETAG = '"v1"'
REPO = Path(__file__).resolve().parent.parent
POLICY = RetryPolicy(max_attempts=3, backoff_base_s=0.0, read_timeout_s=10.0)


def fits_header(n_data_bytes: int) -> bytes:
    """The primary header of a FITS file whose data is ``n_data_bytes`` unsigned bytes."""
    header = afits.Header([("SIMPLE", True), ("BITPIX", 8), ("NAXIS", 1)])
    header["NAXIS1"] = n_data_bytes
    return header.tostring().encode("ascii")


def fits_size(n_data_bytes: int) -> int:
    """Size of that file: header, then data padded to whole FITS blocks."""
    padded = -(-n_data_bytes // FITS_BLOCK) * FITS_BLOCK
    return len(fits_header(n_data_bytes)) + padded


@dataclass
class GeneratedFits:
    """One served file: ``/<name>`` is a FITS file of ``n_data_bytes`` of zeros."""

    n_data_bytes: int
    stall_after_bytes: int | None = None  # first request: send this much, then wait for `go`
    break_first_at: int | None = None  # first request: close after this many bytes
    honour_range: bool = True
    requests: list[dict[str, str | None]] = field(default_factory=list)

    def content(self, offset: int, n: int) -> bytes:
        """``n`` bytes of the file from ``offset`` (header bytes, or zeros)."""
        header = fits_header(self.n_data_bytes)
        head = header[offset : offset + n]
        return head + bytes(n - len(head))


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        """Quiet."""

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        """Serve a generated FITS file, honouring a ``Range: bytes=N-`` when configured."""
        spec = self.server.files.get(self.path.lstrip("/"))
        if spec is None:
            self.send_error(404)
            return
        first = not spec.requests
        rng = self.headers.get("Range")
        spec.requests.append({"Range": rng, "If-Range": self.headers.get("If-Range")})
        size = fits_size(spec.n_data_bytes)
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng and spec.honour_range else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(size - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", ETAG)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        stop = size
        if first and spec.break_first_at is not None:
            stop = spec.break_first_at
        stall = first and spec.stall_after_bytes is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client went away
            self._stream(spec, start, stop, stall)
        self.close_connection = True

    def _stream(self, spec: GeneratedFits, start: int, stop: int, stall: bool) -> None:
        header = fits_header(spec.n_data_bytes)
        if start < len(header):
            self.wfile.write(header[start:stop])
            start = min(len(header), stop)
        while start < stop:
            if stall and start >= (spec.stall_after_bytes or 0):
                self.wfile.flush()
                self.server.go.wait(timeout=60.0)
                return
            n = min(len(ZEROS), stop - start)
            self.wfile.write(memoryview(ZEROS)[:n])
            start += n


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    files: dict[str, GeneratedFits]
    go: threading.Event


Serve = Callable[[dict[str, GeneratedFits]], tuple[str, _Server]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """``serve(files)`` starts a server on 127.0.0.1 for ``{name: GeneratedFits}``: (URL, server)."""
    servers: list[_Server] = []

    def start(files: dict[str, GeneratedFits]) -> tuple[str, _Server]:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.files, httpd.go = files, threading.Event()
        kwargs = {"poll_interval": 0.05}
        threading.Thread(target=httpd.serve_forever, kwargs=kwargs, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/", httpd

    yield start
    for httpd in servers:
        httpd.go.set()
        httpd.shutdown()
        httpd.server_close()


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if ".tmp-" in p.name] if folder.exists() else []


# Peak RSS is measured in a fresh process, where the test's own history cannot hide it. Linux
# resets the peak (VmHWM) to the current RSS on "5" > /proc/self/clear_refs, so the increase
# is the download's own; elsewhere the increase of ru_maxrss is a weaker, still valid bound.
_MEASURE = """
import json, re, resource, sys
from astroclip_core.sources.fetch import fetch_file, fits_validator
from astroclip_core.sources.http import RetryPolicy

def status_kb(key):
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))

base, folder = sys.argv[1], sys.argv[2]
policy = RetryPolicy(max_attempts=2, read_timeout_s=30.0)
check = fits_validator()
warm = fetch_file(base + "small.fits", folder + "/small.fits", check, policy)  # loads every module
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    before_kb, how = status_kb("VmRSS"), "VmHWM"
except OSError:
    before_kb, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
big = fetch_file(base + "big.fits", folder + "/big.fits", check, policy)
after_kb = status_kb("VmHWM") if how == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"ok": [warm.ok, big.ok], "reason": big.reason, "n_bytes": big.n_bytes,
                  "before_kb": before_kb, "after_kb": after_kb, "how": how}))
"""


def test_a_1gb_download_raises_peak_rss_by_less_than_100mb(serve, tmp_path: Path) -> None:
    n_data = 1 << 30
    base, _ = serve({"big.fits": GeneratedFits(n_data), "small.fits": GeneratedFits(1 << 20)})
    big = tmp_path / "big.fits"
    try:
        run = subprocess.run(
            [sys.executable, "-c", _MEASURE, base, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        report = json.loads(run.stdout.strip().splitlines()[-1])
        assert report["ok"] == [True, True], report["reason"]
        assert report["n_bytes"] == fits_size(n_data) == big.stat().st_size
        raised_mb = (report["after_kb"] - report["before_kb"]) / 1024
        gib = big.stat().st_size / 2**30
        print(f"peak RSS ({report['how']}) raised by {raised_mb:.1f} MB for a {gib:.2f} GiB file")
        assert raised_mb < 100, f"peak RSS ({report['how']}) rose by {raised_mb:.0f} MB"
        assert _temps(tmp_path) == []
    finally:
        big.unlink(missing_ok=True)


@pytest.mark.parametrize("honour_range", [True, False])
def test_a_broken_off_download_resumes_or_restarts(
    serve, tmp_path: Path, honour_range: bool
) -> None:
    spec = GeneratedFits(8 << 20, break_first_at=3 << 20, honour_range=honour_range)
    base, _ = serve({"x.fits": spec})
    dest = tmp_path / "cache" / "x.fits"
    result = fetch_file(base + "x.fits", str(dest), fits_validator(), POLICY)
    assert result.ok and result.attempts == 2, result.reason
    size = fits_size(8 << 20)
    assert dest.stat().st_size == size == result.n_bytes
    assert dest.read_bytes() == spec.content(0, size)
    # the second request asks for what the first did not deliver, guarded by the ETag
    assert spec.requests == [
        {"Range": None, "If-Range": None},
        {"Range": f"bytes={3 << 20}-", "If-Range": ETAG},
    ]
    assert _temps(dest.parent) == []


def test_a_download_that_keeps_breaking_off_leaves_nothing_behind(serve, tmp_path: Path) -> None:
    spec = GeneratedFits(4 << 20, break_first_at=1 << 20, honour_range=False)
    base, _ = serve({"x.fits": spec})
    dest = tmp_path / "cache" / "x.fits"
    result = fetch_file(base + "x.fits", str(dest), fits_validator(), RetryPolicy(max_attempts=1))
    assert not result.ok and "truncated" in result.reason and "x.fits" in result.reason
    assert not dest.parent.exists()  # no file, no temporary, not even the folder made for it


_KILLED = """
import sys
from astroclip_core.sources.fetch import fetch_file
from astroclip_core.sources.http import RetryPolicy
fetch_file(sys.argv[1], sys.argv[2], None, RetryPolicy(max_attempts=1, read_timeout_s=60.0))
"""


def test_a_killed_download_leaves_no_file_at_the_target_and_is_swept(serve, tmp_path: Path) -> None:
    spec = GeneratedFits(16 << 20, stall_after_bytes=2 << 20)
    base, server = serve({"x.fits": spec})
    dest = tmp_path / "cache" / "x.fits"
    child = subprocess.Popen([sys.executable, "-c", _KILLED, base + "x.fits", str(dest)], cwd=REPO)
    try:
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            partial = _temps(dest.parent)
            if partial and partial[0].stat().st_size >= 2 << 20:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the download never got 2 MB into its temporary file")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    assert not dest.exists()  # only the temporary holds the half-written bytes
    (left,) = _temps(dest.parent)
    assert left.name.startswith(".x.fits.tmp-") and left.stat().st_size < fits_size(16 << 20)
    server.go.set()
    result = fetch_file(base + "x.fits", str(dest), fits_validator(), POLICY)
    assert result.ok and dest.stat().st_size == fits_size(16 << 20)
    assert _temps(dest.parent) == []  # the killed process's temporary was swept away
