"""Legacy Surveys DR9 coadd bricks from the archive (HTTPS, s3, the sample sky) or a mirror.

The brick root is the DR9 root (``LegacySurveySource.brick_root``): it holds
``survey-bricks.fits.gz``, ``<region>/survey-bricks-dr9-<region>.fits.gz`` and the brick images
(:mod:`astroclip_core.sources.layout`). Two kinds of root:

- **Remote** (``https://``, ``http://``, ``s3://``): files are fetched with
  :func:`~astroclip_core.sources.fetch.fetch_file` into the raw cache at
  ``StorageLayout.brick_cache(dr, relpath)``, which mirrors the archive's relative path. A brick
  image is validated by decompressing all of it (:func:`read_brick_image`), so a corrupt
  download is fetched once more (``RetryPolicy.corrupt_refetches``) and then recorded as a
  failure, like a coadd file.
- **Local** (a plain path or ``file://``, e.g. the on-disk mirror at NERSC): files are read
  where they are, never copied into the cache. A missing or corrupt file is a failure at once
  (there is nothing to fetch again).
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from astroclip_core import fsio
from astroclip_core.formats import FormatError
from astroclip_core.formats.legacysurvey_bricks import (
    read_brick_image,
    read_region_bricks,
    read_survey_bricks,
)
from astroclip_core.sky.bricks import BrickIndex
from astroclip_core.sources import layout
from astroclip_core.sources.fetch import FailureRecord, FetchJob, fetch_all, fetch_file
from astroclip_core.sources.http import RetryClock, RetryPolicy
from astroclip_core.storage import StorageLayout

FAILURE_KIND = "brick"


@dataclass(frozen=True, order=True)
class BrickFile:
    """One brick image: region ('north'/'south'), brick name and band."""

    region: str
    brickname: str
    band: str

    @property
    def relpath(self) -> str:
        """Path relative to the DR9 root (``layout.brick_image_path``)."""
        return layout.brick_image_path(self.region, self.brickname, self.band)


@dataclass(frozen=True)
class BrickCatalog:
    """Every brick (the index) and, per region, the names of those the archive has."""

    index: BrickIndex
    available: dict[str, frozenset[str]]

    def region_of(self, row: int) -> str:
        """The region of index row ``row`` (by its centre's Dec; brick rows end at the join)."""
        return layout.region_of_dec(float(self.index.dec_deg[row]))

    def has_data(self, row: int) -> bool:
        """True when the archive has brick ``row`` in its region."""
        return str(self.index.brickname[row]) in self.available.get(self.region_of(row), ())

    def file(self, row: int, band: str) -> BrickFile:
        """The image file of brick ``row`` in ``band``."""
        return BrickFile(self.region_of(row), str(self.index.brickname[row]), band)


@dataclass(frozen=True)
class BrickFetch:
    """Where one brick image can be read (a local path), or why it cannot (``failure``)."""

    brick: BrickFile
    path: str | None
    failure: FailureRecord | None = None
    from_cache: bool = False


def is_local_root(root: str) -> bool:
    """True for a plain path or a ``file://`` URL (read in place, never cached)."""
    return "://" not in root or root.startswith("file://")


def _local(root: str, relpath: str) -> Path:
    return Path(root.removeprefix("file://")) / relpath


def _url(root: str, relpath: str) -> str:
    return f"{root.rstrip('/')}/{relpath}"


def _check_gz_fits(path: Path, name: str) -> None:
    """A gzipped FITS table is whole: the gzip CRC and length check out, FITS magic inside."""
    try:
        with gzip.open(path, "rb") as fh:
            head = fh.read(9)
            while fh.read(1 << 22):
                pass
    except (OSError, EOFError) as err:
        raise FormatError(name, f"corrupt gzip stream: {err}") from err
    if head != b"SIMPLE  =":
        raise FormatError(name, f"not a gzipped FITS file (starts with {head!r})")


_CATALOGS: dict[tuple[str, ...], BrickCatalog] = {}
_CATALOGS_LOCK = threading.Lock()


def fetch_brick_catalog(
    root: str,
    cache: StorageLayout,
    dr: str = "dr9",
    policy: RetryPolicy | None = None,
    s3_endpoint_url: str | None = None,
) -> BrickCatalog:
    """The brick index and per-region brick lists of the archive at ``root``.

    A region whose list is missing (HTTP 404, no file in a mirror) has no bricks; a missing
    ``survey-bricks.fits.gz`` raises FileNotFoundError, another failure FetchError. The parsed
    catalog of the last files read is kept per process, keyed by their contents.
    """
    relpaths = [layout.SURVEY_BRICKS_PATH, *map(layout.survey_bricks_region_path, layout.REGIONS)]
    paths: list[str | None] = []
    for relpath in relpaths:
        if is_local_root(root):
            local = _local(root, relpath)
            paths.append(str(local) if local.exists() else None)
            continue
        result = fetch_file(
            _url(root, relpath),
            cache.brick_cache(dr, relpath),
            _check_gz_fits,
            policy,
            s3_endpoint_url=s3_endpoint_url,
        )
        if not result.ok and result.status != 404:
            result.raise_for_failure()
        paths.append(result.dest_url if result.ok else None)
    if paths[0] is None:
        raise FileNotFoundError(f"{_url(root, relpaths[0])}: no brick index at this DR9 root")
    key = tuple(_digest(p) for p in paths)
    with _CATALOGS_LOCK:
        if key in _CATALOGS:
            return _CATALOGS[key]
    available = {}
    for region, path in zip(layout.REGIONS, paths[1:], strict=True):
        available[region] = frozenset() if path is None else _read_local(path, read_region_bricks)
    catalog = BrickCatalog(_read_local(paths[0], read_survey_bricks), available)
    with _CATALOGS_LOCK:
        _CATALOGS.clear()  # one archive per process at a time is the common case
        _CATALOGS[key] = catalog
    return catalog


def _digest(path: str | None) -> str:
    """Content digest of a brick table (the same bytes anywhere parse to the same catalog)."""
    return (
        "" if path is None else hashlib.blake2b(fsio.read_bytes(path), digest_size=16).hexdigest()
    )


def _read_local(path: str, reader):
    with fsio.local_copy(path) as local:
        return reader(local)


def fetch_bricks(
    root: str,
    bricks: Sequence[BrickFile],
    cache: StorageLayout,
    dr: str = "dr9",
    concurrency: int = 4,
    policy: RetryPolicy | None = None,
    clock: RetryClock | None = None,
    s3_endpoint_url: str | None = None,
) -> list[BrickFetch]:
    """Make each brick image readable from a local path; results in input order.

    Remote roots download into the cache (validated, corrupt downloads fetched again);
    local roots are checked in place. Failures come back as ``BrickFetch.failure`` (kind
    ``brick``, key = the relative path), never raised.
    """
    if is_local_root(root):
        return [_check_local(root, b) for b in bricks]
    jobs = [FetchJob(_url(root, b.relpath), cache.brick_cache(dr, b.relpath)) for b in bricks]
    outcomes = fetch_all(
        jobs,
        _BrickValidator(),
        policy,
        concurrency,
        clock,
        s3_endpoint_url=s3_endpoint_url,
        label="brick images",
    )
    out = []
    for brick, result in zip(bricks, outcomes, strict=True):
        if result.ok:
            out.append(BrickFetch(brick, result.dest_url, from_cache=result.from_cache))
        else:
            out.append(BrickFetch(brick, None, result.failure(FAILURE_KIND, brick.relpath)))
    return out


class _BrickValidator:
    """Validator of a brick image download: the whole image decompresses, its BRICKNAM is the
    one in its file name (read from the URL/path the fetcher reports)."""

    def __call__(self, path: Path, name: str) -> None:
        try:
            _, brickname, _ = layout.parse_brick_image_path(_relpath_tail(name))
        except ValueError:
            brickname = None
        read_brick_image(path, brickname)


def _relpath_tail(name: str) -> str:
    """The ``<region>/coadd/...`` tail of a URL or path."""
    for region in layout.REGIONS:
        marker = f"/{region}/coadd/"
        if marker in name:
            return name[name.rindex(marker) + 1 :]
    return name


def _check_local(root: str, brick: BrickFile) -> BrickFetch:
    """A brick image of a local mirror, checked where it lies."""
    path = _local(root, brick.relpath)
    if not path.is_file():
        reason = f"{path}: not in the brick mirror"
        return BrickFetch(
            brick, None, FailureRecord(FAILURE_KIND, brick.relpath, str(path), reason, 0)
        )
    try:
        read_brick_image(path, brick.brickname)
    except FormatError as err:
        return BrickFetch(
            brick, None, FailureRecord(FAILURE_KIND, brick.relpath, str(path), str(err), 0)
        )
    return BrickFetch(brick, str(path))
