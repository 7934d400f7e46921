"""The sample sky as a service for the pipeline: publish missing releases, start the server.

A release counts as published when its redshift catalogue and truth table exist (both are
written after every coadd file of the release). All releases in one folder must come from one
config, since they share the imaging sky; asking for another seed or size raises.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

import numpy as np

from astroclip_core import fsio
from astroclip_core.releases import Release
from astroclip_core.samplesky.config import SampleSkyConfig, default_root, preset
from astroclip_core.samplesky.generate import (
    GENERATOR_VERSION,
    MANIFEST_NAME,
    GenerationSummary,
    desi_root,
    generate,
    manifest_generator_version,
    read_manifest,
)
from astroclip_core.samplesky.generate import truth_path as _truth_path
from astroclip_core.samplesky.server import SampleSkyServer, serve_sample_sky
from astroclip_core.sources import layout


def default_samplesky_root() -> Path:
    """``<data root>/samplesky`` (see :func:`astroclip_core.samplesky.config.default_root`)."""
    return default_root()


def truth_path(root: Path | str, release: str) -> Path:
    """The truth table of one release: ``<root>/truth/<release>.parquet``."""
    return _truth_path(Path(root), release)


def truth_tracers(truth_url: str, targetids) -> np.ndarray:
    """(N,) object array: the truth table's tracer (BGS, LRG, ELG, ...) of each of ``targetids``,
    None for a target the table lacks. ``truth_url`` is a path or fsspec URL of the table."""
    truth = fsio.read_dataset(fsio.parquet_dataset(truth_url)).select(["targetid", "tracer"])
    ids, tracers = truth.column("targetid").to_pylist(), truth.column("tracer").to_pylist()
    tracer_of = dict(zip(ids, tracers, strict=True))
    return np.array([tracer_of.get(int(t)) for t in targetids], dtype=object)


def _is_written(root: Path, release: Release) -> bool:
    zcat = desi_root(root) / layout.zcatalog_path(release)
    return zcat.exists() and truth_path(root, release.name).exists()


def is_published(root: Path | str, release: str) -> bool:
    """True when ``release`` is completely written under ``root`` (False when nothing is)."""
    root = Path(root)
    if not (root / MANIFEST_NAME).exists():
        return False
    cfg = read_manifest(root)
    names = [fp.name for fp in cfg.releases]
    return release in names and _is_written(root, cfg.footprint(release).release)


def releases_of(size: str = "default", seed: int | None = None, scale: int = 1) -> list[Release]:
    """The releases the sample sky of a size preset can generate, in generation order."""
    return [fp.release for fp in preset(size, seed=seed, scale=scale).releases]


def ensure_published(
    root: Path | str,
    releases: list[str],
    seed: int | None = None,
    size: str = "default",
    scale: int = 1,
) -> GenerationSummary | None:
    """Generate those of ``releases`` that are missing under ``root``; None when none were.

    Raises ValueError when ``root`` already holds a sample sky made with another config, or by
    a generator that wrote different data (an older GENERATOR_VERSION), and when a release is
    not one the config describes (the message lists those it does). ``scale`` grows every
    release's footprint (:func:`astroclip_core.samplesky.config.scaled`).
    """
    root = Path(root)
    cfg: SampleSkyConfig = preset(size, seed=seed, scale=scale)
    wanted = [cfg.footprint(name).release for name in releases]
    root.mkdir(parents=True, exist_ok=True)
    # Several Dagster step processes may start at once on a fresh machine: one generates,
    # the others wait on the lock and then find the releases published.
    with open(root / ".generate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / MANIFEST_NAME).exists() and read_manifest(root) != cfg:
            raise ValueError(
                f"{root}: holds a sample sky generated with another config than size={size!r} "
                f"seed={cfg.seed} scale={scale}; use another folder or delete this one"
            )
        if (root / MANIFEST_NAME).exists() and (
            found := manifest_generator_version(root)
        ) != GENERATOR_VERSION:
            raise ValueError(
                f"{root}: holds a sample sky written by generator version {found}, and this code "
                f"writes version {GENERATOR_VERSION} (different data); delete it to regenerate"
            )
        missing = [r.name for r in wanted if not _is_written(root, r)]
        return generate(root, cfg, missing) if missing else None


def start_server(root: Path | str) -> SampleSkyServer:
    """A started loopback server over ``root`` (call ``stop()`` when done)."""
    return serve_sample_sky(root).start()
