"""One partition's pairs step at a time, across the processes of this machine.

The pairs step reads the partition's interim spectra and cutouts, writes its pairs, then (under
an evicting raw-cache policy, :mod:`astroclip_core.ingest.rawcache`) deletes those interim
tables. Two runs of one partition at once (a re-execution started while the first run goes,
or the same partition asked for twice) would otherwise let one delete what the other is about
to read. :func:`partition_lock` serialises "read interim -> write pairs -> evict" per data root,
release and pixel: an exclusive ``flock`` on a file in :func:`~astroclip_core.sources.hostslots.
lock_dir` (never in the data root, which may be an object store). The kernel drops the lock
when its process dies, so a killed run never leaves a partition locked.

Across machines (a Dask cluster, Kubernetes pods) the lock holds per machine only; there the
pairs step's other guard takes over: a missing interim input is fetched again
(:func:`astroclip_core.ingest.pairs.assemble_pairs`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from astroclip_core.sources.hostslots import lock_dir
from astroclip_core.storage import StorageLayout

# Sub-folder of lock_dir() holding one lock file per (data root, release, pixel).
PARTITION_LOCKS = "partitions"


def partition_lock_path(layout: StorageLayout, release: str, pixel: int) -> Path:
    """The lock file of one partition of one data root (the root enters as a hash)."""
    root_key = hashlib.sha256(layout.root.rstrip("/").encode()).hexdigest()[:16]
    return lock_dir() / PARTITION_LOCKS / f"{root_key}-{release}-{int(pixel)}.lock"


@contextlib.contextmanager
def partition_lock(layout: StorageLayout, release: str, pixel: int) -> Iterator[Path]:
    """Hold the partition's exclusive lock (waiting for it); yields the lock file's path.

    Not re-entrant: a second ``partition_lock`` of the same partition in the same process
    waits for ever, so hold it around one step's work only.
    """
    path = partition_lock_path(layout, release, pixel)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


__all__ = ["partition_lock", "partition_lock_path"]
