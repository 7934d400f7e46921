"""A loopback HTTP server for the sample sky, so the real downloaders run against it unchanged.

Serves ``root`` as static files (Content-Length always; single HTTP Range requests answered
206; folders as Apache-style HTML listings with ``<a href="name/">name/</a>`` links) under the
same URL prefixes as the real services (``/public/`` for DESI, ``/cfs/cosmo/data/legacysurvey/
dr9/`` for Legacy Surveys), and the cutout service at ``/viewer/fits-cutout?ra=&dec=&layer=
&pixscale=&bands=&size=`` (see :mod:`astroclip_core.samplesky.cutouts`). Bad cutout
parameters get a 400 with a message. DR9 coadd bricks and brick tables
(``<region>/coadd/...``, ``survey-bricks.fits.gz``) are drawn on their first request and kept
on disk (:mod:`astroclip_core.samplesky.bricks`); a brick the survey does not have is a 404.
Coadd files the generator left out are drawn on request and served, and listed, like files on
disk (:mod:`astroclip_core.samplesky.lazy`). Cutouts are drawn by a pool of worker processes
(:mod:`astroclip_core.samplesky.render_worker`), as the real viewer serves from many.
"""

from __future__ import annotations

import errno
import html
import io
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import BinaryIO
from urllib.parse import parse_qs, unquote, urlsplit

from astroclip_core.formats.legacysurvey import write_cutout
from astroclip_core.samplesky.cutouts import CutoutRenderer, CutoutRequest
from astroclip_core.samplesky.lazy import LazyCoadds, RenderMismatchError
from astroclip_core.samplesky.render_worker import RenderPool, default_render_processes
from astroclip_core.sources import layout

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    server: _SkyHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        """Stay quiet: tests and the pipeline run many requests."""

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        """Headers only."""
        self._dispatch(head=True)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        """A file, a listing or a cutout."""
        self._dispatch(head=False)

    def _dispatch(self, head: bool) -> None:
        url = urlsplit(self.path)
        if url.path.strip("/") == layout.SAMPLESKY_CUTOUT_PATH.strip("/"):
            self._cutout(url.query, head)
            return
        self._static(unquote(url.path), head)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        head: bool,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, status: int, message: str, head: bool) -> None:
        self._send(status, (message + "\n").encode(), "text/plain; charset=utf-8", head)

    def _cutout(self, query: str, head: bool) -> None:
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        try:
            if "ra" not in params or "dec" not in params:
                raise ValueError("ra and dec are required")
            req = CutoutRequest(
                ra_deg=float(params["ra"]),
                dec_deg=float(params["dec"]),
                layer=params.get("layer", "ls-dr9"),
                pixscale_arcsec=float(params.get("pixscale", "0.262")),
                bands=params.get("bands", "grz"),
                size_pix=int(params.get("size", "256")),
            )
        except ValueError as err:
            self._error(HTTPStatus.BAD_REQUEST, f"bad cutout request: {err}", head)
            return
        image = self.server.pool.render(req)
        body = write_cutout(image, req.ra_deg, req.dec_deg, req.pixscale_arcsec, req.bands)
        self._send(HTTPStatus.OK, body, "image/fits", head)

    def _static(self, path: str, head: bool) -> None:
        root = self.server.root
        target = (root / path.lstrip("/")).resolve()
        if target != root and root not in target.parents:
            self._error(HTTPStatus.FORBIDDEN, f"{path}: outside the served folder", head)
            return
        if target.is_dir():
            if not path.endswith("/"):
                self._send(
                    HTTPStatus.MOVED_PERMANENTLY, b"", "text/plain", head, {"Location": path + "/"}
                )
                return
            listing = _listing(path, target, self.server.lazy.listed(target))
            self._send(HTTPStatus.OK, listing, "text/html; charset=utf-8", head)
            return
        if not target.exists():
            # a DR9 brick image or brick table: drawn on first request, then kept on disk
            self.server.renderer.bricks.ensure_path(target)
        if not target.is_file() and not target.name.startswith("."):
            # a coadd file the generator left out: drawn now (samplesky.lazy)
            try:
                body = self.server.lazy.body(target)
            except RenderMismatchError as err:
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(err), head)
                return
            if body is not None:
                self._file(target, head, body)
                return
        if not target.is_file() or target.name.startswith("."):
            self._error(HTTPStatus.NOT_FOUND, f"{path}: not found", head)
            return
        self._file(target, head)

    def _file(self, target: Path, head: bool, body: bytes | None = None) -> None:
        # ``body``: the file's bytes when it is drawn on request, not read from ``target``
        size = len(body) if body is not None else target.stat().st_size
        start, end, status = 0, size - 1, HTTPStatus.OK
        extra = {"Accept-Ranges": "bytes"}
        rng = self.headers.get("Range")
        if rng:
            m = _RANGE_RE.match(rng.strip())
            if m is None or (not m.group(1) and not m.group(2)):
                self._error(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, f"unsupported Range {rng!r}", head
                )
                return
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:
                start = max(size - int(m.group(2)), 0)
            if start >= size or start > end:
                self._send(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                    b"",
                    "text/plain",
                    head,
                    {"Content-Range": f"bytes */{size}"},
                )
                return
            status = HTTPStatus.PARTIAL_CONTENT
            extra["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1
        self.send_response(status)
        self.send_header(
            "Content-Type",
            "application/fits" if target.suffix == ".fits" else "application/octet-stream",
        )
        self.send_header("Content-Length", str(length))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        if head:
            return
        with io.BytesIO(body) if body is not None else target.open("rb") as fh:
            fh.seek(start)
            _copy_n(fh, self.wfile, length)


def _copy_n(src: BinaryIO, dst: BinaryIO, n: int) -> None:
    """Copy exactly ``n`` bytes from file ``src`` to ``dst``."""
    remaining = n
    while remaining > 0:
        chunk = src.read(min(1 << 20, remaining))
        if not chunk:
            raise OSError(f"file ended {remaining} bytes early")
        dst.write(chunk)
        remaining -= len(chunk)


def _listing(url_path: str, folder: Path, drawn: dict[str, int] | None = None) -> bytes:
    """Apache-like index page: one link per entry, folders with a trailing slash.

    ``drawn``: name -> size of the files served on request in ``folder``, listed like the others.
    """
    rows = {
        p.name + ("/" if p.is_dir() else ""): "-" if p.is_dir() else str(p.stat().st_size)
        for p in folder.iterdir()
        if not p.name.startswith(".")
    }
    rows |= {name: str(size) for name, size in (drawn or {}).items() if name not in rows}
    title = html.escape(f"Index of {url_path}")
    lines = [f"<html><head><title>{title}</title></head><body><h1>{title}</h1><pre>"]
    lines.append('<a href="../">Parent Directory</a>')
    for name, size in sorted(rows.items()):
        lines.append(f'<a href="{html.escape(name)}">{html.escape(name)}</a> {size}')
    lines.append("</pre></body></html>\n")
    return "\n".join(lines).encode()


class _SkyHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], root: Path, render_processes: int) -> None:
        super().__init__(address, _Handler)
        self.root = root.resolve()
        self.renderer = CutoutRenderer(root)
        self.lazy = LazyCoadds(root)
        self.pool = RenderPool(self.root, self.renderer, render_processes)


class SampleSkyServer:
    """The running (or startable) server; use as a context manager or call start/stop.

    ``render_processes``: cutout worker processes (None: ``default_render_processes()``,
    ``$ASTROCLIP_SAMPLESKY_RENDER_PROCESSES`` or min(4, cores)).
    """

    def __init__(
        self,
        root: Path | str,
        host: str = "127.0.0.1",
        port: int = 0,
        render_processes: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.host = host
        self.port = port
        self.render_processes = (
            default_render_processes() if render_processes is None else render_processes
        )
        self._httpd: _SkyHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/``."""
        if self._httpd is None:
            raise RuntimeError("the sample-sky server is not started")
        return f"http://{self.host}:{self._httpd.server_address[1]}/"

    @property
    def desi_root_url(self) -> str:
        """Root of the DESI tree, the analogue of https://data.desi.lbl.gov/public/."""
        return self.base_url + layout.SAMPLESKY_DESI_PREFIX

    @property
    def legacysurvey_root_url(self) -> str:
        """Root of Legacy Surveys DR9, the analogue of https://portal.nersc.gov/cfs/cosmo/data/legacysurvey/dr9/."""
        return self.base_url + layout.SAMPLESKY_LEGACYSURVEY_PREFIX

    @property
    def cutout_url(self) -> str:
        """The cutout endpoint, the analogue of https://www.legacysurvey.org/viewer/fits-cutout."""
        return self.base_url + layout.SAMPLESKY_CUTOUT_PATH

    def start(self) -> SampleSkyServer:
        """Bind and serve in a background thread."""
        if self._httpd is not None:
            return self
        try:
            self._httpd = _SkyHTTPServer((self.host, self.port), self.root, self.render_processes)
        except OSError as err:
            if err.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
                raise
            # "Address already in use" alone would not say which address failed.
            raise OSError(
                err.errno, f"cannot serve the sample sky on {self.host}:{self.port}: {err.strerror}"
            ) from err
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="samplesky-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.pool.close()
        if self._thread is not None:
            self._thread.join()
        self._httpd, self._thread = None, None

    def __enter__(self) -> SampleSkyServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_sample_sky(
    root: Path | str, host: str = "127.0.0.1", port: int = 0, render_processes: int | None = None
) -> SampleSkyServer:
    """A server for the sample sky under ``root``: ``with serve_sample_sky(root) as srv: ...``."""
    return SampleSkyServer(root, host, port, render_processes)


__all__ = ["SampleSkyServer", "serve_sample_sky"]
