"""A cap on concurrent requests to one service host that holds across processes.

A step's thread pool caps its own requests (``concurrency``), but two ``astroclip run`` at
once, or the parallel steps of a multiprocess run, each had their own cap, so a service saw
their sum. :class:`HostSlots` makes the cap hold for every process of this user on this
machine: the folder :func:`lock_dir` ``/<host>`` holds ``cap`` slot files, and a request is
made only while its thread holds an exclusive ``flock`` on one of them. The kernel drops a
lock when its process dies, so a killed run never leaves a slot taken. Processes configured
with different caps share the slots they have in common: together they make at most the
largest cap's requests at once.

Across machines (a Dask cluster) the files lock per machine, so N workers' machines may make
N times the cap. :meth:`HostSlots.for_url` adds a cluster-wide cap when it is called inside
a Dask task: a ``distributed.Semaphore`` named after the host, with ``cap`` leases, taken
around each request besides the local slot (:func:`dask_semaphore`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "ASTROCLIP_LOCK_DIR"
# Wait between tries while every slot is taken: short (a cutout takes ~0.1-1 s), jittered so
# waiting processes do not poll in step.
POLL_MIN_S = 0.005
POLL_MAX_S = 0.05


def lock_dir() -> Path:
    """Where slot files live: ``$ASTROCLIP_LOCK_DIR``, else ``$XDG_RUNTIME_DIR/astroclip/locks``,
    else ``~/.cache/astroclip/locks`` (per user, so one user's runs share their caps)."""
    if os.environ.get(LOCK_DIR_ENV):
        return Path(os.environ[LOCK_DIR_ENV])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "astroclip" / "locks"
    return Path.home() / ".cache" / "astroclip" / "locks"


def host_key(url: str) -> str:
    """A folder name for the host of ``url``, e.g. ``www.legacysurvey.org``.

    The port is left out: one machine's services on several ports (each sample-sky server
    takes a new one) share a cap, and the lock folder does not grow with every run.
    """
    return re.sub(r"[^A-Za-z0-9.-]", "_", urlsplit(url).hostname or "local")


@dataclass(frozen=True)
class HostSlots:
    """At most ``cap`` requests at once to the host of ``url`` from this machine's processes."""

    url: str
    cap: int
    folder: Path | None = None  # default: lock_dir() / host_key(url)
    semaphore: Any = None  # a cluster-wide distributed.Semaphore, held with each slot

    def __post_init__(self) -> None:
        if self.cap < 1:
            raise ValueError(f"request cap {self.cap} for {host_key(self.url)} must be >= 1")

    @classmethod
    def for_url(cls, url: str, cap: int) -> HostSlots:
        """Slots for ``url``'s host, with the cluster-wide semaphore when run in a Dask task.

        Call it in the task's own thread (Dask finds its worker per thread), then use the
        slots from any thread.
        """
        return cls(url, cap, semaphore=dask_semaphore(url, cap))

    @property
    def path(self) -> Path:
        """The folder of this host's slot files."""
        return self.folder or lock_dir() / host_key(self.url)

    @contextlib.contextmanager
    def slot(self) -> Iterator[int]:
        """Hold one of the ``cap`` slots (waiting while all are taken); yields its number."""
        folder = self.path
        folder.mkdir(parents=True, exist_ok=True)
        rng = random.Random()
        start = rng.randrange(self.cap)  # spread the first tries over the slots
        while True:
            for k in range(self.cap):
                i = (start + k) % self.cap
                fd = os.open(folder / f"slot-{i}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                try:
                    with self.semaphore or contextlib.nullcontext():
                        yield i
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
                return
            time.sleep(rng.uniform(POLL_MIN_S, POLL_MAX_S))


def _dask_worker() -> Any | None:
    """The Dask worker running this code, or None (not under Dask, or Dask not installed)."""
    try:
        from distributed import get_worker
    except ImportError:
        return None
    try:
        return get_worker()
    except ValueError:  # not inside a worker task
        return None


def dask_semaphore(url: str, cap: int) -> Any | None:
    """Inside a Dask task, the cluster-wide semaphore for ``url``'s host; else None.

    Named ``astroclip-requests-<host>`` with ``cap`` leases: every task asking for that name,
    on any worker, shares it (the scheduler holds it).
    """
    if _dask_worker() is None:
        return None
    from distributed import Semaphore

    return Semaphore(max_leases=cap, name=f"astroclip-requests-{host_key(url)}")


__all__ = ["HostSlots", "dask_semaphore", "host_key", "lock_dir"]
