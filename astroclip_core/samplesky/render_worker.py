"""A cutout-drawing worker process of the sample-sky server, and the pool that runs them.

GalSim holds the GIL while it draws, so the server's request threads alone draw one stamp at a
time, as a one-core server would. The pool runs ``processes`` workers, each a plain
``python -m astroclip_core.samplesky.render_worker <root>`` child (not multiprocessing, which
would re-import the caller's ``__main__``: a user's script without a main guard would start
servers recursively). Requests and stamps travel as length-prefixed pickles over the child's
stdin/stdout; both ends are this module, so nothing untrusted is unpickled.

Each stamp is seeded by its brick tile, so which process draws it does not change a byte.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import BinaryIO

import numpy as np

from astroclip_core.samplesky.cutouts import CutoutRenderer, CutoutRequest

RENDER_PROCESSES_ENV = "ASTROCLIP_SAMPLESKY_RENDER_PROCESSES"
_HEADER = struct.Struct("<Q")  # byte length of the pickle that follows


def default_render_processes() -> int:
    """Cutout worker processes: ``$ASTROCLIP_SAMPLESKY_RENDER_PROCESSES``, else min(4, cores).

    0 or 1 draws in the request threads (no workers). Raises ValueError naming the variable
    when it is not an integer >= 0.
    """
    text = os.environ.get(RENDER_PROCESSES_ENV, "").strip()
    if not text:
        return min(4, os.cpu_count() or 1)
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{RENDER_PROCESSES_ENV}={text!r}: must be an integer >= 0")
    return value


def _send(stream: BinaryIO, obj: object) -> None:
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def _receive(stream: BinaryIO) -> object:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError("the render worker closed its pipe")
    (n,) = _HEADER.unpack(head)
    body = stream.read(n)
    if len(body) < n:
        raise EOFError(f"the render worker sent {len(body)} of {n} bytes")
    return pickle.loads(body)


class _Worker:
    """One child process; one request at a time (the pool hands it to one thread)."""

    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "astroclip_core.samplesky.render_worker", str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def render(self, req: CutoutRequest) -> np.ndarray:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        _send(self.proc.stdin, req)
        status, value = _receive(self.proc.stdout)
        if status != "ok":
            raise RuntimeError(f"sample-sky cutout {req.key()}: {value}")
        return value

    def close(self) -> None:
        if self.proc.stdin is not None:
            # the worker exits at EOF; a dead one's pipe is broken already
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class RenderPool:
    """Draws cutouts in ``processes`` workers, started on first use; <= 1 draws in-thread."""

    def __init__(self, root: Path, renderer: CutoutRenderer, processes: int) -> None:
        self._root, self._renderer, self._processes = root, renderer, processes
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._started = 0
        self._closed = False
        self._lock = threading.Lock()

    def _take(self) -> _Worker | None:
        # An idle worker, a new one while fewer than ``processes`` run, else wait for one. The
        # wait is polled: a worker that dies is not given back, and its slot frees up instead.
        while True:
            with self._lock:
                if self._closed or self._processes <= 1:
                    return None
                try:
                    return self._idle.get_nowait()
                except queue.Empty:
                    pass
                if self._started < self._processes:
                    self._started += 1
                    return _Worker(self._root)
            try:
                return self._idle.get(timeout=0.5)
            except queue.Empty:
                continue

    def _drop(self, worker: _Worker) -> None:
        # a dead worker is not given back: stop it and free its slot for a new one
        worker.close()
        with self._lock:
            self._started -= 1

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            if not self._closed:
                self._idle.put(worker)
                return
        worker.close()  # the pool was closed while this worker drew

    def render(self, req: CutoutRequest) -> np.ndarray:
        """The (nbands, size, size) float32 stamp of ``req``."""
        worker = self._take()
        if worker is None:
            return self._renderer.render(req)
        try:
            image = worker.render(req)
        except (EOFError, OSError):
            # the worker died (killed, out of memory): free its slot, draw this stamp here
            self._drop(worker)
            return self._renderer.render(req)
        except BaseException:
            self._give_back(worker)
            raise
        self._give_back(worker)
        return image

    def close(self) -> None:
        """Stop the workers; later requests draw in-thread (idempotent)."""
        with self._lock:
            self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def _serve(root: str) -> None:
    renderer = CutoutRenderer(root)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # nothing else may write to the reply pipe: library prints go to stderr
    sys.stdout = sys.stderr
    while True:
        try:
            req = _receive(stdin)
        except EOFError:
            return
        try:
            reply: tuple[str, object] = ("ok", renderer.render(req))
        except Exception as err:  # noqa: BLE001 - sent back and raised in the server
            reply = ("error", f"{type(err).__name__}: {err}")
        _send(stdout, reply)


if __name__ == "__main__":
    _serve(sys.argv[1])
