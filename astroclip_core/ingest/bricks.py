"""Images of one partition from DR9 coadd bricks, and the rule that picks bricks or the service.

**The cost rule** (:func:`choose_imaging`). Per partition, every matched target's stamp is
assigned the bricks that own its four corners and its centre (``BrickIndex.owners``; a stamp
near a brick edge or corner needs 2-4 bricks). With ``n`` targets and ``b`` distinct bricks
with data, ``B`` bands and the constants of :class:`ImagingCost`::

    service_s = n * cutout_request_s
    bricks_s  = b * B * (brick_request_s + brick_image_mb / bandwidth_mb_s + brick_decode_s)

``auto`` takes the smaller (ties go to the service); ``service`` and ``bricks`` force one. With
the defaults a brick costs 3 * 1.08 s against 0.5 s per cutout, so bricks win from about 6.5
targets per brick: the default sample sky (about 5 targets per brick, fewer once edge stamps
count their neighbours) stays on the service, EDR's dense SV3 rosettes go to bricks. A local
mirror (``file://`` or a path) has no request latency and disk bandwidth
(:meth:`ImagingCost.for_root`), so bricks win sooner there. The decision and both estimates go
into the step's metadata.

**The brick path** (:func:`cutouts_from_bricks`) fetches the brick images the stamps need
(:func:`astroclip_core.sources.bricks.fetch_bricks`), then cuts every stamp with the same
resampler the cutout service uses (:func:`astroclip_core.sky.bricks.stamp_from_bricks`), reading
only the tiles each stamp touches, so for the same bricks both paths give the same pixels. A
stamp whose brick could not be had fails with the brick's reason; the brick itself is a
failure record of kind ``brick``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from contextlib import ExitStack
from dataclasses import asdict, dataclass

import numpy as np

from astroclip_core import fsio
from astroclip_core.formats.legacysurvey_bricks import BrickImageFile
from astroclip_core.sky.bricks import BrickWindow, plan_stamp, stamp_from_bricks
from astroclip_core.sky.tan import tan_pixel_to_sky
from astroclip_core.sources import layout
from astroclip_core.sources.bricks import (
    BrickCatalog,
    BrickFetch,
    BrickFile,
    fetch_brick_catalog,
    fetch_bricks,
    is_local_root,
)
from astroclip_core.sources.fetch import FailureRecord
from astroclip_core.sources.http import RetryPolicy
from astroclip_core.sources.legacysurvey import CutoutBatch, LegacySurveySource
from astroclip_core.storage import StorageLayout

log = logging.getLogger(__name__)

IMAGING_MODES = ("auto", "service", "bricks")
DEFAULT_IMAGING = "auto"
OPEN_FILES_KEPT = 24  # brick images kept open while cutting (8 bricks x 3 bands)


@dataclass(frozen=True)
class ImagingCost:
    """Constants of the cost rule; the defaults describe the real DR9 archive over the internet.

    - ``cutout_request_s``: one 152x152 g,r,z request to legacysurvey.org/viewer/fits-cutout,
      rendered server-side from the bricks (assumed; measure your own requests to tune it).
    - ``brick_request_s``: latency of one file request to portal.nersc.gov (assumed).
    - ``brick_image_mb``: one ``legacysurvey-<brick>-image-<band>.fits.fz``: the real DR6 brick
      in tests/data is 1.64 MB with 12% of its g pixels covered, about 14 MB when full.
    - ``bandwidth_mb_s``: download rate of one stream (assumed).
    - ``brick_decode_s``: decompressing and checking one brick image locally (a sample-sky
      brick takes about 0.1-0.3 s on one core).
    """

    cutout_request_s: float = 0.5
    brick_request_s: float = 0.5
    brick_image_mb: float = 14.0
    bandwidth_mb_s: float = 50.0
    brick_decode_s: float = 0.3

    @classmethod
    def for_root(cls, brick_root: str) -> ImagingCost:
        """The defaults, or for a local mirror no request latency and 500 MB/s disk reads."""
        if is_local_root(brick_root):
            return cls(brick_request_s=0.0, bandwidth_mb_s=500.0)
        return cls()

    def service_s(self, n_targets: int) -> float:
        """Expected seconds of ``n_targets`` cutout requests."""
        return n_targets * self.cutout_request_s

    def bricks_s(self, n_bricks: int, n_bands: int) -> float:
        """Expected seconds of fetching and decoding ``n_bricks`` bricks in ``n_bands`` bands."""
        per_file = self.brick_request_s + self.brick_image_mb / self.bandwidth_mb_s
        return n_bricks * n_bands * (per_file + self.brick_decode_s)


@dataclass(frozen=True)
class ImagingChoice:
    """What the cost rule decided for a partition, and on what numbers."""

    requested: str
    mode: str  # service | bricks
    n_targets: int
    n_bricks: int
    service_s: float
    bricks_s: float
    cost: ImagingCost

    def metadata(self) -> dict[str, object]:
        """Step metadata: the decision, its inputs and the constants used."""
        return {
            "imaging_requested": self.requested,
            "imaging": self.mode,
            "imaging_targets": self.n_targets,
            "imaging_bricks": self.n_bricks,
            "imaging_service_s_estimate": round(self.service_s, 1),
            "imaging_bricks_s_estimate": round(self.bricks_s, 1),
            "imaging_cost_constants": ", ".join(f"{k}={v:g}" for k, v in asdict(self.cost).items()),
        }


def stamp_corner_bricks(
    catalog: BrickCatalog,
    ra_deg: np.ndarray,
    dec_deg: np.ndarray,
    size_pix: int,
    pixscale_arcsec: float,
) -> np.ndarray:
    """(N, 5) index rows owning each stamp's four corner pixels and its centre (-1: none)."""
    n = len(ra_deg)
    last = float(size_pix)
    corners = [(1.0, 1.0), (last, 1.0), (1.0, last), (last, last), ((last + 1) / 2, (last + 1) / 2)]
    crpix = (size_pix + 1) / 2.0
    out = np.empty((n, len(corners)), dtype=np.int64)
    for k, (x, y) in enumerate(corners):
        # each stamp has its own tangent point: the projection broadcasts over them
        ra, dec = tan_pixel_to_sky(
            np.full(n, x), np.full(n, y), ra_deg, dec_deg, crpix, crpix, pixscale_arcsec
        )
        out[:, k] = catalog.index.owners(ra, dec)
    return out


def choose_imaging(
    requested: str,
    n_targets: int,
    n_bricks: int,
    n_bands: int,
    cost: ImagingCost,
) -> ImagingChoice:
    """Apply the cost rule (module docstring) to a partition's counts."""
    if requested not in IMAGING_MODES:
        raise ValueError(f"imaging={requested!r} must be one of {IMAGING_MODES}")
    service_s, bricks_s = cost.service_s(n_targets), cost.bricks_s(n_bricks, n_bands)
    mode = requested
    if requested == "auto":
        mode = "bricks" if bricks_s < service_s else "service"
    return ImagingChoice(requested, mode, n_targets, n_bricks, service_s, bricks_s, cost)


class _OpenBricks:
    """Brick images kept open (least recently used closed first) for window reads.

    A brick in a remote cache (``s3://``) is read from a temporary local copy while open.
    """

    def __init__(self, paths: dict[BrickFile, str]) -> None:
        self.paths = paths
        self.files: OrderedDict[BrickFile, tuple[BrickImageFile, ExitStack]] = OrderedDict()

    def window(self, brick: BrickFile, win: BrickWindow) -> np.ndarray:
        """Pixels of ``win`` in one brick image (opened on first use)."""
        if brick not in self.files:
            stack = ExitStack()
            local = stack.enter_context(fsio.local_copy(self.paths[brick]))
            image = BrickImageFile(local, brick.brickname)
            stack.callback(image.close)
            self.files[brick] = (image, stack)
            while len(self.files) > OPEN_FILES_KEPT:
                self.files.popitem(last=False)[1][1].close()
        self.files.move_to_end(brick)
        return self.files[brick][0].window(win)

    def close(self) -> None:
        """Close every open image (and remove temporary copies)."""
        for _, stack in self.files.values():
            stack.close()
        self.files.clear()


@dataclass(frozen=True)
class BrickCutouts:
    """A brick path's result: the cutouts, and the brick files it read or failed to get."""

    batch: CutoutBatch
    fetched: tuple[BrickFetch, ...]

    def brick_failures(self) -> list[FailureRecord]:
        """Failure rows (kind ``brick``) of the brick images that could not be had."""
        return [f.failure for f in self.fetched if f.failure is not None]


def cutouts_from_bricks(
    source: LegacySurveySource,
    catalog: BrickCatalog,
    ra_deg: np.ndarray,
    dec_deg: np.ndarray,
    cache: StorageLayout,
    concurrency: int = 4,
    policy: RetryPolicy | None = None,
) -> BrickCutouts:
    """One stamp per position cut from the bricks (module docstring); same contract as
    :meth:`LegacySurveySource.fetch_cutouts` (``attempts`` counts the requests of the bricks
    a failed stamp needed; ``urls`` names the failed brick)."""
    ra_deg, dec_deg = np.asarray(ra_deg, np.float64), np.asarray(dec_deg, np.float64)
    size, bands = source.size_pix, source.bands
    # Centred where a cutout request would be (the query sends 7 decimals), so both paths agree.
    centres = [layout.cutout_query_position(r, d) for r, d in zip(ra_deg, dec_deg, strict=True)]
    plans = [plan_stamp(catalog.index, r, d, size, source.pixscale_arcsec) for r, d in centres]
    needed = sorted(
        {
            catalog.file(p.row, b)
            for parts in plans
            for p in parts
            if catalog.has_data(p.row)
            for b in bands
        }
    )
    fetched = fetch_bricks(
        source.brick_root,
        needed,
        cache,
        source.dr,
        concurrency,
        policy,
        s3_endpoint_url=source.s3_endpoint_url,
    )
    by_file = {f.brick: f for f in fetched}
    reader = _OpenBricks({f.brick: f.path for f in fetched if f.path is not None})
    images, reasons, attempts, urls = [], [], [], []

    def read(row: int, win: BrickWindow) -> np.ndarray | None:
        if not catalog.has_data(row):
            return None  # a brick the survey lacks: zeros
        return np.stack([reader.window(catalog.file(row, b), win) for b in bands])

    try:
        for parts in plans:
            files = [
                catalog.file(p.row, b) for p in parts if catalog.has_data(p.row) for b in bands
            ]
            bad = [by_file[f] for f in files if by_file[f].failure is not None]
            if bad:
                images.append(None)
                reasons.append(f"brick {bad[0].brick.relpath}: {bad[0].failure.reason}")
                attempts.append(sum(b.failure.attempts for b in bad))
                urls.append(bad[0].failure.url)
                continue
            images.append(stamp_from_bricks(parts, size, len(bands), read))
            reasons.append("")
            attempts.append(0)
            urls.append("")
    finally:
        reader.close()
    keys = tuple(source.cutout_key(r, d) for r, d in zip(ra_deg, dec_deg, strict=True))
    batch = _batch(images, reasons, attempts, urls, keys, len(bands), size)
    log.info(
        "bricks: %d stamps from %d brick images (%d failed), %d stamps failed",
        int(batch.ok.sum()),
        len(fetched),
        sum(f.failure is not None for f in fetched),
        batch.n_failed,
    )
    return BrickCutouts(batch, tuple(fetched))


def _batch(
    images: list[np.ndarray | None],
    reasons: list[str],
    attempts: list[int],
    urls: list[str],
    keys: tuple[str, ...],
    nbands: int,
    size: int,
) -> CutoutBatch:
    ok = np.array([im is not None for im in images], dtype=bool)
    stack = np.zeros((int(ok.sum()), nbands, size, size), dtype=np.float32)
    for k, i in enumerate(np.flatnonzero(ok)):
        stack[k] = images[i]
    no_data = np.zeros((len(images), nbands), dtype=bool)
    no_data[ok] = ~np.any(stack.reshape(len(stack), nbands, size * size) != 0, axis=2)
    return CutoutBatch(
        images=stack,
        ok=ok,
        reasons=tuple(reasons),
        attempts=np.array(attempts, dtype=np.int32),
        from_cache=np.zeros(len(images), dtype=bool),
        no_data_bands=no_data,
        keys=keys,
        urls=tuple(urls),
    )


@dataclass(frozen=True)
class PartitionImages:
    """A partition's cutouts, how they were had, and the raw files they came from."""

    batch: CutoutBatch
    choice: ImagingChoice
    brick_failures: tuple[FailureRecord, ...] = ()
    brick_cache_files: tuple[str, ...] = ()  # brick images read from the raw cache (shared)
    note: str = ""

    def metadata(self) -> dict[str, object]:
        """The imaging decision for the step's metadata, with the brick counts."""
        out = self.choice.metadata() | {"brick_files_failed": len(self.brick_failures)}
        return out | ({"imaging_note": self.note} if self.note else {})


def fetch_images(
    source: LegacySurveySource,
    cache: StorageLayout,
    ra_deg: np.ndarray,
    dec_deg: np.ndarray,
    imaging: str = DEFAULT_IMAGING,
    concurrency: int = 8,
    policy: RetryPolicy | None = None,
    cost: ImagingCost | None = None,
) -> PartitionImages:
    """One stamp per position, from the cutout service or the bricks as ``imaging`` and the
    cost rule (module docstring) decide.

    ``service`` never reads the brick index (its choice then reports 0 bricks and 0 s for
    them: not estimated). Under ``auto`` an archive without a brick index
    (``survey-bricks.fits.gz`` missing) uses the service, and says so in ``note``.
    """
    if imaging not in IMAGING_MODES:
        raise ValueError(f"imaging={imaging!r} must be one of {IMAGING_MODES}")
    cost = cost or ImagingCost.for_root(source.brick_root)
    n, nb = len(ra_deg), len(source.bands)
    catalog, note = None, ""
    if imaging != "service":
        try:
            catalog = fetch_brick_catalog(
                source.brick_root, cache, source.dr, policy, source.s3_endpoint_url
            )
        except FileNotFoundError as err:
            if imaging == "bricks":
                raise
            note = f"{err}; using the cutout service"
    if catalog is None:
        choice = choose_imaging("service", n, 0, nb, cost)
        choice = ImagingChoice(imaging, "service", n, 0, choice.service_s, 0.0, cost)
    else:
        owners = stamp_corner_bricks(
            catalog, ra_deg, dec_deg, source.size_pix, source.pixscale_arcsec
        )
        n_bricks = sum(catalog.has_data(int(r)) for r in np.unique(owners[owners >= 0]))
        choice = choose_imaging(imaging, n, n_bricks, nb, cost)
    log.info(
        "imaging (%s): %s for %d targets, %d bricks (estimates: service %.0f s, bricks %.0f s)",
        imaging, choice.mode, n, choice.n_bricks, choice.service_s, choice.bricks_s,
    )  # fmt: skip
    if choice.mode == "service":
        batch = source.fetch_cutouts(ra_deg, dec_deg, cache, concurrency=concurrency, policy=policy)
        return PartitionImages(batch, choice, note=note)
    assert catalog is not None
    result = cutouts_from_bricks(source, catalog, ra_deg, dec_deg, cache, concurrency, policy)
    cached = () if is_local_root(source.brick_root) else tuple(
        f.path for f in result.fetched if f.path is not None
    )  # fmt: skip
    return PartitionImages(result.batch, choice, tuple(result.brick_failures()), cached, note)
