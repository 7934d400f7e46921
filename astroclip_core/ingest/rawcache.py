"""How much of a partition's downloads (``raw/``) and their decoded copies (``interim/``) a run
keeps once its pairs are written.

Every file under ``raw/`` is a copy of a remote file and can be fetched again; once a
partition's pairs are written, its images and spectra live in the pairs table, so its raw files
are only worth their disk if they will be read again. The same holds for the partition's
interim ``spectra`` and ``cutouts`` tables: they are the decoded arrays that the pairs table
holds again, row for row, so keeping them doubles the disk of every pair.
:class:`RawCachePolicy` says what to do, applied by :func:`apply_after_pairs` (raw files) and
:func:`evict_interim` (interim tables) once a partition's pairs are written and checked:

- ``keep``: keep everything (a re-run of any step reads the cache and ``interim/``, no
  request is made).
- ``evict`` (the default): delete the raw files the partition alone read, listed by its
  fetching steps with :func:`record_raw_files`: its coadd files (a coadd's nside-64 pixel lies
  inside one nside-16 partition), its cutouts and its image bricks (a brick on a partition
  border is then fetched again by the neighbour that needs it: a few border bricks, against
  ~14 MB per band per brick kept for ever). Files that neighbouring partitions read far more
  (the sweep catalogues, one per 10x5 degree box; the brick index) are recorded as *shared*
  and kept; bound them with a size cap. The partition's interim ``spectra`` and ``cutouts``
  tables are deleted too (``sources`` and ``matches``, small, are kept). A re-run of
  ``spectra`` or ``cutouts`` fetches the evicted files again (the failures table records any
  that cannot be had); a re-run of ``pairs`` alone finds its evicted inputs gone and fetches
  them again first, as a re-run of those steps would.
- ``<N>gb`` (e.g. ``2gb``, ``0.5gb``): after each partition, delete the least recently used
  files of the whole raw cache (oldest modification time first; a cache hit of a local file
  renews it, see :func:`astroclip_core.sources.fetch.fetch_file`) until it holds at most N GB;
  the partition's interim ``spectra`` and ``cutouts`` go as under ``evict`` (a re-run of
  ``pairs`` rebuilds them from the raw files the cap kept, when it kept them).

Nothing is deleted under ``evict`` when a pairs check failed (a cap still applies to the raw
cache): the files are then what a re-run needs. An interim table is deleted only while it is
the version the pairs step read (:func:`astroclip_core.tables.interim.remove_interim`), so a
concurrent run's newer table survives.

The same default holds for the sample sky as for a real archive: its loopback server answers
any file again at disk speed, so the raw cache saves no time and costs 2.4 GB for the default
sky, and the default run then exercises the policy that real archives get.

Works on a local data root and on any fsspec root (``s3://...``).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from astroclip_core import fsio
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.interim import remove_interim

log = logging.getLogger(__name__)

KEEP, EVICT, CAP = "keep", "evict", "cap"
DEFAULT_RAW_CACHE = EVICT
# The environment variable the pipeline's storage resource reads its default policy from.
RAW_CACHE_ENV = "ASTROCLIP_RAW_CACHE"
_CAP_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*gb$")
BYTES_PER_GB = 1_000_000_000


@dataclass(frozen=True)
class RawCachePolicy:
    """``keep``, ``evict`` or a size cap (``mode == "cap"``, ``cap_bytes`` > 0)."""

    mode: str = DEFAULT_RAW_CACHE
    cap_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in (KEEP, EVICT, CAP):
            raise ValueError(f"raw cache mode {self.mode!r} must be keep, evict or cap")
        if (self.mode == CAP) != (self.cap_bytes is not None):
            raise ValueError(
                f"raw cache mode {self.mode!r}: cap_bytes={self.cap_bytes} given wrongly"
            )
        if self.cap_bytes is not None and self.cap_bytes <= 0:
            raise ValueError(f"raw cache cap {self.cap_bytes} bytes must be > 0")

    @classmethod
    def parse(cls, text: str) -> RawCachePolicy:
        """``keep``, ``evict`` or ``<N>gb`` (N > 0, decimals allowed; case and spaces ignored).

        Raises ValueError naming the value and what is accepted.
        """
        value = str(text).strip().lower()
        if value in (KEEP, EVICT):
            return cls(value)
        m = _CAP_RE.match(value)
        if m is None or float(m.group(1)) <= 0:
            raise ValueError(
                f"raw cache policy {text!r}: expected 'keep', 'evict' or a size cap such as "
                "'2gb' (a number of GB above 0)"
            )
        return cls(CAP, int(float(m.group(1)) * BYTES_PER_GB))

    def __str__(self) -> str:
        if self.mode == CAP:
            return f"{self.cap_bytes / BYTES_PER_GB:g}gb"
        return self.mode


@dataclass(frozen=True)
class RawCacheOutcome:
    """What :func:`apply_after_pairs` did: the policy, files and bytes deleted, bytes left."""

    policy: str
    files_removed: int
    bytes_removed: int
    cache_bytes_after: int | None  # the whole raw cache (measured for a cap only)
    note: str

    def metadata(self) -> dict[str, object]:
        """Flat metadata entries for the pairs step."""
        out: dict[str, object] = {
            "raw_cache_policy": self.policy,
            "raw_files_removed": self.files_removed,
            "raw_mb_removed": round(self.bytes_removed / 1e6, 1),
            "raw_cache_note": self.note,
        }
        if self.cache_bytes_after is not None:
            out["raw_cache_mb_after"] = round(self.cache_bytes_after / 1e6, 1)
        return out


@dataclass(frozen=True)
class InterimOutcome:
    """What :func:`evict_interim` did: the interim tables and bytes deleted, and why."""

    tables_removed: tuple[str, ...]
    bytes_removed: int
    note: str

    def metadata(self) -> dict[str, object]:
        """Flat metadata entries for the pairs step."""
        return {
            "interim_removed": ", ".join(self.tables_removed) or "none",
            "interim_mb_removed": round(self.bytes_removed / 1e6, 1),
            "interim_note": self.note,
        }


def record_raw_files(
    layout: StorageLayout,
    release: str,
    pixel: int,
    stage: str,
    paths: list[str],
    shared: list[str] | None = None,
) -> None:
    """Record the raw cache files a partition's ``stage`` read (``StorageLayout.raw_used_file``).

    ``paths``: files only this partition needs (evicted with it); ``shared``: files that
    neighbouring partitions read too (kept by ``evict``). Both are URLs under
    ``layout.raw_dir()``, recorded relative to the data root, so a copied or moved root keeps
    working records. Re-running the stage replaces the record.
    """
    body = {
        "own": sorted({_relative(layout, p) for p in paths}),
        "shared": sorted({_relative(layout, p) for p in shared or []}),
    }
    fsio.atomic_write_bytes(
        layout.raw_used_file(release, pixel, stage), (json.dumps(body, indent=0) + "\n").encode()
    )


def _relative(layout: StorageLayout, url: str) -> str:
    """``url`` relative to the data root; ValueError unless it lies in the raw cache."""
    root = layout.root.rstrip("/") + "/"
    raw = layout.raw_dir().rstrip("/") + "/"
    if not url.startswith(raw):
        raise ValueError(f"{url}: not under the raw cache {raw}")
    return url[len(root) :]


def _recorded(layout: StorageLayout, release: str, pixel: int, stage: str) -> list[str]:
    """URLs of the files the partition's ``stage`` recorded as its own (none recorded: [])."""
    url = layout.raw_used_file(release, pixel, stage)
    if not fsio.exists(url):
        return []
    try:
        body = json.loads(fsio.read_bytes(url))
        rels = [str(p) for p in body["own"]]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{url}: not a raw-files record ({err})") from err
    return [f"{layout.root.rstrip('/')}/{rel}" for rel in rels]


def _remove(urls: list[str], raw_root: str) -> tuple[int, int]:
    """Delete ``urls`` (those that exist, all under ``raw_root``); return (files, bytes)."""
    n, size = 0, 0
    root_path = fsio.filesystem(raw_root)[1].rstrip("/")
    for url in urls:
        fs, path = fsio.filesystem(url)
        if not path.startswith(root_path + "/"):
            raise ValueError(f"{url}: not under the raw cache {raw_root}; refusing to delete it")
        try:
            nbytes = int(fs.size(path))
            fs.rm_file(path)
        except FileNotFoundError:
            continue
        n, size = n + 1, size + nbytes
        if fsio.is_local(url):
            _prune_empty_parents(Path(path).parent, Path(root_path))
    return n, size


def _prune_empty_parents(folder: Path, stop: Path) -> None:
    """Remove ``folder`` and its parents while empty, never ``stop`` or above it."""
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): stop here
            return
        folder = folder.parent


def evict_partition(
    layout: StorageLayout, release: str, pixel: int, stages: tuple[str, ...]
) -> tuple[int, int]:
    """Delete the raw files the partition's ``stages`` recorded as its own; (files, bytes)."""
    urls = [u for stage in stages for u in _recorded(layout, release, pixel, stage)]
    return _remove(urls, layout.raw_dir())


def _mtime_s(info: dict) -> float:
    """Modification time (seconds since the epoch) of an fsspec ``find(detail=True)`` entry."""
    for key in ("mtime", "LastModified", "last_modified", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
    return 0.0


def cache_files(layout: StorageLayout) -> list[tuple[str, int, float]]:
    """Every file of the raw cache as (url, bytes, mtime_s); temporaries included."""
    root = layout.raw_dir()
    fs, path = fsio.filesystem(root)
    if not fs.exists(path):
        return []
    found = fs.find(path, detail=True)
    local = fsio.is_local(root)
    return [
        (p if local else fs.unstrip_protocol(p), int(info.get("size") or 0), _mtime_s(info))
        for p, info in found.items()
        if info.get("type", "file") == "file"
    ]


def enforce_cap(layout: StorageLayout, cap_bytes: int) -> tuple[int, int, int]:
    """Delete least recently used raw files until the cache holds <= ``cap_bytes``.

    Returns (files removed, bytes removed, bytes left).
    """
    files = sorted(cache_files(layout), key=lambda f: (f[2], f[0]))
    total = sum(f[1] for f in files)
    chosen = []
    for url, size, _ in files:
        if total <= cap_bytes:
            break
        chosen.append(url)
        total -= size
    n, removed = _remove(chosen, layout.raw_dir())
    return n, removed, total


def apply_after_pairs(
    layout: StorageLayout,
    policy: RawCachePolicy,
    release: str,
    pixel: int,
    stages: tuple[str, ...],
    pairs_ok: bool,
) -> RawCacheOutcome:
    """Apply ``policy`` once the partition's pairs are written; ``pairs_ok``: checks passed.

    ``evict`` deletes nothing when a pairs check failed: the raw files are then what a
    re-run needs. A cap is applied either way (it concerns the whole cache).
    """
    if policy.mode == KEEP:
        return RawCacheOutcome(str(policy), 0, 0, None, "kept every raw file")
    if policy.mode == EVICT:
        if not pairs_ok:
            return RawCacheOutcome(str(policy), 0, 0, None, "kept: a pairs check failed")
        n, size = evict_partition(layout, release, pixel, stages)
        log.info("raw cache %s-%d: evicted %d files (%.1f MB)", release, pixel, n, size / 1e6)
        return RawCacheOutcome(
            str(policy), n, size, None, "deleted the partition's own raw files; shared ones kept"
        )
    assert policy.cap_bytes is not None
    n, size, left = enforce_cap(layout, policy.cap_bytes)
    log.info("raw cache: removed %d files (%.1f MB); %.1f MB left", n, size / 1e6, left / 1e6)
    return RawCacheOutcome(
        str(policy), n, size, left, f"least recently used files removed down to {policy}"
    )


def evict_interim(
    layout: StorageLayout,
    policy: RawCachePolicy,
    release: str,
    pixel: int,
    read_versions: dict[str, str],
    pairs_ok: bool,
) -> InterimOutcome:
    """Delete the partition's interim tables that its pairs now hold, unless ``policy`` keeps them.

    ``read_versions``: stage -> :func:`~astroclip_core.tables.interim.interim_version` of the
    table the pairs step read; a table rewritten since (a concurrent run of its step) is left.
    ``keep`` deletes nothing, nor does any policy when a pairs check failed (``pairs_ok``).
    """
    if policy.mode == KEEP:
        return InterimOutcome((), 0, "kept: raw cache policy keep")
    if not pairs_ok:
        return InterimOutcome((), 0, "kept: a pairs check failed")
    removed, size = [], 0
    for stage, version in sorted(read_versions.items()):
        nbytes = remove_interim(layout, stage, release, pixel, version)
        if nbytes:
            removed.append(stage)
            size += nbytes
    left = sorted(set(read_versions) - set(removed))
    note = "deleted the tables the pairs hold again"
    if left:
        note += f"; {', '.join(left)} rewritten since read (or gone): left"
    log.info("interim %s-%d: evicted %s (%.1f MB)", release, pixel, removed, size / 1e6)
    return InterimOutcome(tuple(removed), size, note)


__all__ = [
    "DEFAULT_RAW_CACHE",
    "RAW_CACHE_ENV",
    "InterimOutcome",
    "RawCacheOutcome",
    "RawCachePolicy",
    "apply_after_pairs",
    "cache_files",
    "enforce_cap",
    "evict_interim",
    "evict_partition",
    "record_raw_files",
]
