"""Configuration of the sample sky: seed, footprints per release, sizes and trap fractions.

The imaging sky (every Legacy Surveys source) is drawn per nside-16 pixel from (seed, pixel)
over the union of all releases' footprints, so it does not depend on which release is
generated. Each release observes a leading fraction of each pixel's spectroscopic target pool,
so a later release re-observes the same galaxies (with a new noise realisation) and adds more.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from astroclip_core.releases import Release
from astroclip_core.sky.healpix import PARTITION_NSIDE, HealpixPixel
from astroclip_core.sky.matching import unit_vectors
from astroclip_core.storage import DEFAULT_STORAGE, StorageLayout
from astroclip_core.storage import default_root as default_data_root


@dataclass(frozen=True)
class ReleaseFootprint:
    """One release of the sample sky.

    ``name`` and ``specprod``: the release folder and the spectroscopic production it is
    written under (``public/<name>/spectro/redux/<specprod>/``). ``pixels``: nested nside-16
    pixels it covers. ``target_fraction``: the leading fraction of each pixel's target pool it
    observes. ``surveys``: DESI surveys its targets come from; the first is the main one, the
    others hold re-observations (repeated TARGETIDs). ``zcatalog_dir``: where under the
    production its redshift catalogue is written (``zcatalog`` or ``zcatalog/v<N>``), as the
    real releases vary it; discovery reads it back from the listing.
    """

    name: str
    specprod: str
    pixels: tuple[int, ...]
    target_fraction: float
    surveys: tuple[str, ...]
    zcatalog_dir: str

    def __post_init__(self) -> None:
        Release(self.name, self.specprod, self.zcatalog_dir)  # validates all three
        for pixel in self.pixels:
            HealpixPixel(PARTITION_NSIDE, pixel)
        if not 0 < self.target_fraction <= 1:
            raise ValueError(f"target_fraction {self.target_fraction} must be in (0, 1]")
        if len(self.surveys) < 2:
            raise ValueError(f"release {self.name}: need >= 2 surveys to have repeated targets")

    @property
    def release(self) -> Release:
        """The release as discovery finds it: name, specprod and zcatalog folder."""
        return Release(self.name, self.specprod, self.zcatalog_dir)


@dataclass(frozen=True)
class DecoyRates:
    """Catalogue rows the clean-galaxy selection must remove, per spectroscopic galaxy."""

    star: float = 0.04
    qso: float = 0.03
    zwarn: float = 0.03
    low_deltachi2: float = 0.03
    sky: float = 0.03
    bad_fiberstatus: float = 0.02
    repeat: float = 0.04  # galaxies observed twice; only one row is primary


@dataclass(frozen=True)
class SampleSkyConfig:
    """Everything that determines the sample sky's bytes (with the code version).

    ``releases`` are generated in any subset and order with the same bytes per release, as
    long as this tuple is only ever extended at its end: a release's rows depend on its place
    in it and on the releases before it, and the imaging sky on the union of their pixels. So
    a new release appended here, over pixels the others already cover, leaves every earlier
    release's files byte-identical.
    """

    seed: int = 20240611
    # zcatalog folders follow the real releases: EDR's is flat, DR1's versioned (v1)
    releases: tuple[ReleaseFootprint, ...] = (
        ReleaseFootprint(
            "edr", "fuji", (1702, 1703, 1709), 0.8, ("sv3", "sv1"), zcatalog_dir="zcatalog"
        ),
        ReleaseFootprint(
            "dr1",
            "iron",
            (1701, 1702, 1703, 1708, 1709),
            1.0,
            ("main", "sv3", "sv1"),
            zcatalog_dir="zcatalog/v1",
        ),
        # a third release that no code names: the new-release sensor's test publishes it
        ReleaseFootprint(
            "dr2",
            "loa",
            (1701, 1702, 1703, 1708, 1709),
            1.0,
            ("main", "sv3", "sv1"),
            zcatalog_dir="zcatalog/v1",
        ),
    )
    galaxies_per_pixel: int = 1250  # the target pool of one nside-16 pixel
    imaging_galaxies_per_target: float = 2.0  # extra imaging-only galaxies per pool galaxy
    imaging_stars_per_target: float = 0.6
    close_pair_fraction: float = 0.04  # pool galaxies with a neighbour 1.2-2.0 arcsec away
    no_imaging_fraction: float = 0.01  # pool galaxies without any Legacy Surveys source
    border_fraction: float = 0.01  # pool galaxies placed on a pixel border (match straddles it)
    decoys: DecoyRates = field(default_factory=DecoyRates)

    def __post_init__(self) -> None:
        names = [r.name for r in self.releases]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate releases in {names}")
        if self.galaxies_per_pixel < 1:
            raise ValueError(f"galaxies_per_pixel {self.galaxies_per_pixel} must be >= 1")

    def footprint(self, name: str) -> ReleaseFootprint:
        """The footprint of release ``name``; ValueError when the sky has no such release."""
        for fp in self.releases:
            if fp.name == name:
                return fp
        raise ValueError(
            f"sample sky has no release {name!r}; it has {[r.name for r in self.releases]}"
        )

    def union_pixels(self) -> tuple[int, ...]:
        """Every nside-16 pixel of any release, sorted: the imaging sky covers these."""
        return tuple(sorted({p for fp in self.releases for p in fp.pixels}))


SIZE_PRESETS: dict[str, SampleSkyConfig] = {
    "default": SampleSkyConfig(),
    "small": SampleSkyConfig(galaxies_per_pixel=300),
    # Two adjacent pixels: edr has one, dr1 and dr2 both, so border matches and a new pixel exist.
    "tiny": SampleSkyConfig(
        releases=(
            ReleaseFootprint("edr", "fuji", (1703,), 0.8, ("sv3", "sv1"), zcatalog_dir="zcatalog"),
            ReleaseFootprint(
                "dr1", "iron", (1702, 1703), 1.0, ("main", "sv3", "sv1"), zcatalog_dir="zcatalog/v1"
            ),
            ReleaseFootprint(
                "dr2", "loa", (1702, 1703), 1.0, ("main", "sv3", "sv1"), zcatalog_dir="zcatalog/v1"
            ),
        ),
        galaxies_per_pixel=60,
        close_pair_fraction=0.1,
        no_imaging_fraction=0.05,
        border_fraction=0.1,
        decoys=DecoyRates(0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1),
    ),
}


def preset(
    size: str,
    seed: int | None = None,
    galaxies_per_pixel: int | None = None,
    scale: int = 1,
) -> SampleSkyConfig:
    """A size preset ('tiny', 'small', 'default'), optionally with another seed or pool size,
    and with every release's footprint grown ``scale`` times (:func:`scaled`; 1 leaves it)."""
    if size not in SIZE_PRESETS:
        raise ValueError(f"unknown sample-sky size {size!r}; choose from {sorted(SIZE_PRESETS)}")
    cfg = SIZE_PRESETS[size]
    if seed is not None:
        cfg = replace(cfg, seed=seed)
    if galaxies_per_pixel is not None:
        cfg = replace(cfg, galaxies_per_pixel=galaxies_per_pixel)
    return scaled(cfg, scale)


def scaled(cfg: SampleSkyConfig, scale: int) -> SampleSkyConfig:
    """``cfg`` with each release covering ``scale`` times its nside-16 pixels (1: ``cfg`` itself).

    Since a pixel's sky depends only on (seed, pixel), the pixels a release already has keep
    their bytes; the added ones are neighbours, so the footprint stays contiguous and has
    partition borders inside it. A release grows from its own pixels plus the grown footprint
    of every earlier release whose pixels it covers, so releases that nest (EDR inside DR1)
    still nest when grown. Raises ValueError for a scale below 1, or one that needs more
    pixels than the sky has.
    """
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"sample-sky scale {scale!r} must be an integer >= 1")
    if scale == 1:
        return cfg
    n_sky = 12 * PARTITION_NSIDE**2
    for fp in cfg.releases:
        if scale * len(fp.pixels) > n_sky:
            raise ValueError(
                f"sample-sky scale {scale}: release {fp.name} would need "
                f"{scale * len(fp.pixels)} nside-{PARTITION_NSIDE} pixels, and the sky has {n_sky}"
            )
    grown: list[ReleaseFootprint] = []
    for fp in cfg.releases:
        seed_pixels = set(fp.pixels)
        for earlier, base in zip(grown, cfg.releases, strict=False):
            if set(base.pixels) <= set(fp.pixels):
                seed_pixels |= set(earlier.pixels)
        pixels = grow_contiguous(fp.pixels, seed_pixels, scale * len(fp.pixels))
        grown.append(replace(fp, pixels=pixels))
    return replace(cfg, releases=tuple(grown))


def grow_contiguous(base: tuple[int, ...], start: set[int], n_pixels: int) -> tuple[int, ...]:
    """``n_pixels`` nside-16 pixels: ``start`` plus neighbours added nearest-first, sorted.

    Each step adds the pixel adjacent (8-neighbour) to those taken whose centre is nearest the
    mean centre of ``base``, ties to the lower pixel number, so the result is contiguous when
    ``start`` is, and compact. Distances are rounded (to ~1e-12 rad) before they are compared,
    so pixels at mathematically equal distances tie on every machine. Raises ValueError when
    ``start`` already holds more than ``n_pixels``.
    """
    if len(start) > n_pixels:
        raise ValueError(
            f"cannot grow pixels {sorted(base)} to {n_pixels}: the releases they must cover "
            f"already hold {len(start)}"
        )
    centre = _mean_centre(base)
    taken = set(start)
    frontier = {
        n.pixel for p in taken for n in HealpixPixel(PARTITION_NSIDE, p).neighbours()
    } - taken
    while len(taken) < n_pixels:
        best = min(frontier, key=lambda p: (-round(float(_pixel_vector(p) @ centre), 12), p))
        taken.add(best)
        frontier.discard(best)
        frontier |= {n.pixel for n in HealpixPixel(PARTITION_NSIDE, best).neighbours()} - taken
    return tuple(sorted(taken))


def _pixel_vector(pixel: int) -> np.ndarray:
    """(3,) unit vector of the centre of one nside-16 pixel."""
    ra_deg, dec_deg = HealpixPixel(PARTITION_NSIDE, pixel).center_deg()
    return unit_vectors(np.array([ra_deg]), np.array([dec_deg]))[0]


def _mean_centre(pixels: tuple[int, ...]) -> np.ndarray:
    """(3,) unit vector of the normalised mean of the pixels' centres."""
    mean = np.sum([_pixel_vector(p) for p in pixels], axis=0)
    return mean / np.linalg.norm(mean)


def default_root() -> Path:
    """``<data root>/samplesky``, the data root being ``$ASTROCLIP_STORAGE`` or ``storage/``.

    The sample sky is a local folder (it is served from disk and locked with ``flock``), so
    with a data root that is not local (``s3://...``) it stays in the repository's
    ``storage/samplesky``.
    """
    layout = StorageLayout(default_data_root())
    if not layout.is_local:
        layout = StorageLayout(str(DEFAULT_STORAGE))
    return Path(layout.samplesky_dir().removeprefix("file://"))
