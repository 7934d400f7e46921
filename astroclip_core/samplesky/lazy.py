"""Coadd files of the sample sky, drawn when they are asked for instead of kept on disk.

A coadd file keeps three arms of flux, ivar, mask and an 11-diagonal resolution matrix per
spectrum: ~8 MB for 64 spectra, 1.6 GB for the default sky, which the pipeline downloads into
its own cache anyway. So the generator writes only the small files (catalogues, redrock
files, tilepix, sweeps, truth) and an index, ``render/coadds-<release>.parquet``
(:func:`~astroclip_core.samplesky.generate.coadd_index_path`), of the coadd files it left
out, each with the size and CRC-32 of its bytes. This module serves them:

- :meth:`LazyCoadds.body` gives the bytes of one file. Its noise comes from the file's own
  seeded generator, so it is drawn alone: from the nside-16 pixel's targets and observation
  rows, which the generator saved (``render/state-<release>-<pixel>.npz``, ~1 MB; drawn again,
  1-3 s, if missing) and which are kept for the last :data:`PIXELS_KEPT` pixels, then the
  file's spectra (~0.1-0.4 s). The bytes are checked against the index (size and CRC-32): a
  renderer that drifted from the generator fails loudly, never serves other data.
- :meth:`LazyCoadds.listed` gives the files a folder listing shows, with their sizes, as the
  real server lists the files it has.
- Rendered files are kept in memory, least recently used first out, up to
  ``cache_bytes`` (:data:`DEFAULT_CACHE_MB`): a client that resumes with a Range request, or
  a HEAD before a GET, does not draw the file again. Nothing is written to disk.

Thread-safe: the server answers each request in its own thread; a file is drawn once even
when several threads ask for it at once.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from astroclip_core.samplesky.assemble import build_pixel_sky
from astroclip_core.samplesky.catalogs import ObservationRows, observation_rows
from astroclip_core.samplesky.config import SampleSkyConfig
from astroclip_core.samplesky.generate import (
    coadd_bytes,
    coadd_contents,
    desi_root,
    read_manifest,
    read_pixel_state,
)
from astroclip_core.samplesky.sky import PixelSky

log = logging.getLogger(__name__)

# Rendered files kept in memory (a default-sky coadd is ~8 MB, so about eight of them).
DEFAULT_CACHE_MB = 64
# nside-16 pixel skies kept: the pipeline fetches a partition's coadds one after the other.
PIXELS_KEPT = 2
INDEX_GLOB = "coadds-*.parquet"


@dataclass(frozen=True)
class LazyFile:
    """One coadd file that is drawn on request: where it is served and what draws it."""

    relpath: str  # under the DESI root, e.g. edr/spectro/redux/fuji/healpix/sv3/dark/...
    release: str
    pixel: int  # nside-16 sky pixel
    coadd_pixel: int  # nside-64
    survey: str
    program: str
    size_bytes: int
    crc32: int


class RenderMismatchError(RuntimeError):
    """A drawn file differs from what the generator recorded (the code changed under the sky)."""


def read_index(root: Path) -> dict[str, LazyFile]:
    """Every file listed in the coadd indexes under ``root``, keyed by relpath (none: empty)."""
    out: dict[str, LazyFile] = {}
    for path in sorted((Path(root) / "render").glob(INDEX_GLOB)):
        release = path.stem.removeprefix("coadds-")
        for r in pq.read_table(path).to_pylist():
            out[r["relpath"]] = LazyFile(
                r["relpath"],
                release,
                int(r["pixel"]),
                int(r["coadd_pixel"]),
                r["survey"],
                r["program"],
                int(r["size_bytes"]),
                int(r["crc32"]),
            )
    return out


class LazyCoadds:
    """The on-request coadd files of the sample sky under ``root`` (see the module docstring)."""

    def __init__(self, root: Path | str, cache_bytes: int = DEFAULT_CACHE_MB << 20) -> None:
        self.root = Path(root).resolve()
        self.desi = desi_root(self.root)
        self.cache_bytes = int(cache_bytes)
        self._lock = threading.Lock()
        self._index_stamp: tuple[tuple[str, int, int], ...] | None = None
        self._files: dict[str, LazyFile] = {}
        self._folders: dict[str, dict[str, int]] = {}
        self._cfg: SampleSkyConfig | None = None
        self._bodies: OrderedDict[str, bytes] = OrderedDict()
        self._skies: OrderedDict[tuple[str, int], tuple[PixelSky, ObservationRows]] = OrderedDict()
        self._file_locks: dict[str, threading.Lock] = {}
        self._pixel_locks: dict[tuple[str, int], threading.Lock] = {}

    def _refresh(self) -> None:
        """Re-read the indexes when one was written or removed since the last look."""
        stamp = tuple(
            (p.name, p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted((self.root / "render").glob(INDEX_GLOB))
        )
        if stamp == self._index_stamp:
            return
        files = read_index(self.root)
        folders: dict[str, dict[str, int]] = {}
        for relpath, f in files.items():
            folder, _, name = relpath.rpartition("/")
            folders.setdefault(folder, {})[name] = f.size_bytes
        self._files, self._folders, self._index_stamp = files, folders, stamp
        self._cfg = None  # a new release may come with a new manifest

    def _relpath(self, target: Path) -> str | None:
        """``target`` (an absolute served path) relative to the DESI root; None outside it."""
        try:
            return target.relative_to(self.desi).as_posix()
        except ValueError:
            return None

    def lookup(self, target: Path) -> LazyFile | None:
        """The on-request file served at ``target`` (absolute, resolved); None if not one."""
        relpath = self._relpath(target)
        if relpath is None:
            return None
        with self._lock:
            self._refresh()
            return self._files.get(relpath)

    def listed(self, folder: Path) -> dict[str, int]:
        """Name -> size in bytes of the on-request files directly in ``folder`` (absolute)."""
        relpath = self._relpath(folder)
        if relpath is None:
            return {}
        with self._lock:
            self._refresh()
            return dict(self._folders.get(relpath.rstrip("/").removeprefix("."), {}))

    def body(self, target: Path) -> bytes | None:
        """The bytes of the on-request file at ``target``; None when it is not one.

        Raises :class:`RenderMismatchError` when the drawn bytes differ from the index.
        """
        f = self.lookup(target)
        if f is None:
            return None
        with self._lock:
            lock = self._file_locks.setdefault(f.relpath, threading.Lock())
        with lock:
            with self._lock:
                if f.relpath in self._bodies:
                    self._bodies.move_to_end(f.relpath)
                    return self._bodies[f.relpath]
            body = self.render(f)
            with self._lock:
                self._bodies[f.relpath] = body
                total = sum(len(b) for b in self._bodies.values())
                while total > self.cache_bytes and len(self._bodies) > 1:
                    _, dropped = self._bodies.popitem(last=False)
                    total -= len(dropped)
            return body

    def _config(self) -> SampleSkyConfig:
        with self._lock:
            if self._cfg is None:
                self._cfg = read_manifest(self.root)
            return self._cfg

    def _pixel(
        self, cfg: SampleSkyConfig, release: str, pixel: int
    ) -> tuple[PixelSky, ObservationRows]:
        key = (release, pixel)
        with self._lock:
            lock = self._pixel_locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                if key in self._skies:
                    self._skies.move_to_end(key)
                    return self._skies[key]
            try:  # written by the generator: no need to draw the pixel's sky again
                sky, rows = read_pixel_state(self.root, release, pixel)
            except (OSError, ValueError, KeyError, TypeError) as err:
                log.info("drawing the sky of pixel %d (%s: %s)", pixel, type(err).__name__, err)
                sky = build_pixel_sky(cfg, pixel)
                rows = observation_rows(cfg, cfg.footprint(release), sky.targets, pixel)
            with self._lock:
                self._skies[key] = (sky, rows)
                while len(self._skies) > PIXELS_KEPT:
                    self._skies.popitem(last=False)
            return sky, rows

    def render(self, f: LazyFile) -> bytes:
        """Draw the bytes of ``f`` (no cache); :class:`RenderMismatchError` if they are not its."""
        cfg = self._config()
        sky, rows = self._pixel(cfg, f.release, f.pixel)
        contents = coadd_contents(
            cfg, cfg.footprint(f.release), sky, rows, (f.coadd_pixel, f.survey, f.program)
        )
        body = coadd_bytes(contents)
        if len(body) != f.size_bytes or zlib.crc32(body) != f.crc32:
            raise RenderMismatchError(
                f"{self.desi / f.relpath}: drawn {len(body)} bytes with CRC-32 {zlib.crc32(body)}, "
                f"the generator recorded {f.size_bytes} bytes with CRC-32 {f.crc32}; the sample "
                "sky was written by other code: delete it to regenerate"
            )
        return body


def sky_file_bytes(root: Path | str, relpath: str) -> bytes:
    """The bytes of the file at ``relpath`` under the sky's DESI root, on disk or drawn.

    For tools and tests that read a coadd file without the server. FileNotFoundError when the
    sky has no such file.
    """
    root = Path(root).resolve()
    path = desi_root(root) / relpath
    if path.is_file():
        return path.read_bytes()
    body = LazyCoadds(root, cache_bytes=0).body(path)
    if body is None:
        raise FileNotFoundError(f"{path}: not in the sample sky, on disk or on request")
    return body


def coadd_relpaths(root: Path | str) -> list[str]:
    """Relpaths (under the DESI root) of every coadd file of the sky, on disk or on request."""
    root = Path(root)
    on_disk = {
        p.relative_to(desi_root(root)).as_posix() for p in desi_root(root).rglob("coadd-*.fits")
    }
    return sorted(on_disk | set(read_index(root)))


__all__ = [
    "DEFAULT_CACHE_MB",
    "LazyCoadds",
    "LazyFile",
    "RenderMismatchError",
    "coadd_relpaths",
    "read_index",
    "sky_file_bytes",
]
