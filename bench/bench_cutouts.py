"""Benchmark: one sample-sky cutout, cut from bricks (now) vs rendered on its own grid (before).

The cutout service renders each stamp on request; the default ``astroclip run`` asks it for
about 3,000. Since the bricks work (issue 13) a stamp is a Lanczos-3 resampling of the brick
windows it needs (:mod:`astroclip_core.samplesky.bricks`). This bench times the same
``--n`` requests (positions of matched targets of one release, as the pipeline asks) with
  1. the current ``CutoutRenderer`` (bricks), and
  2. the renderer of git revision ``--baseline-rev`` (``samplesky/cutouts.py`` read with
     ``git show`` and loaded as a module: it still runs on today's helpers),
after one warm-up request each (sweeps and brick index loaded), and prints s/cutout and the
ratio. Both run in one process, one after the other; on a shared machine read the ratio.
It also prints what ``--imaging auto`` decides for each nside-16 partition of the release
(the cost rule of :mod:`astroclip_core.ingest.bricks`, on the targets' imaging positions).

Run: ``.venv/bin/python bench/bench_cutouts.py --sky /path/to/samplesky [--release edr]
[--n 100] [--baseline-rev 1eca05e]`` (the sky must exist: ``astroclip sample-sky generate``).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

# Runnable from a checkout without `pip install -e .`: put the repository root on sys.path.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from astroclip_core.ingest.bricks import (  # noqa: E402
    ImagingCost,
    choose_imaging,
    stamp_corner_bricks,
)
from astroclip_core.samplesky.cutouts import CutoutRenderer, CutoutRequest  # noqa: E402
from astroclip_core.samplesky.generate import truth_path  # noqa: E402
from astroclip_core.sky.healpix import pixels_of  # noqa: E402
from astroclip_core.sources import layout  # noqa: E402
from astroclip_core.sources.bricks import BrickCatalog  # noqa: E402


def baseline_module(rev: str):
    """``astroclip_core/samplesky/cutouts.py`` of git revision ``rev``, loaded as a module."""
    text = subprocess.run(
        ["git", "show", f"{rev}:astroclip_core/samplesky/cutouts.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "baseline_cutouts.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("baseline_cutouts", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def time_renderer(renderer, request_type, positions: list[tuple[float, float]]) -> float:
    """Seconds per cutout over ``positions`` after one warm-up request."""
    renderer.render(request_type(*positions[0]))
    start = time.perf_counter()
    for ra, dec in positions:
        renderer.render(request_type(ra, dec))
    return (time.perf_counter() - start) / len(positions)


def print_decisions(sky: Path, ra: np.ndarray, dec: np.ndarray) -> None:
    """The cost rule's choice per partition, as ``--imaging auto`` would make it."""
    bricks = CutoutRenderer(sky).bricks
    available = {
        region: frozenset(
            str(bricks.index.brickname[r])
            for r in bricks.rows_with_data
            if bricks.region(r) == region
        )
        for region in layout.REGIONS
    }
    catalog = BrickCatalog(bricks.index, available)
    pixel = pixels_of(ra, dec)
    for p in np.unique(pixel):
        sel = pixel == p
        owners = stamp_corner_bricks(catalog, ra[sel], dec[sel], 152, 0.262)
        n_bricks = sum(catalog.has_data(int(r)) for r in np.unique(owners[owners >= 0]))
        choice = choose_imaging("auto", int(sel.sum()), n_bricks, 3, ImagingCost())
        print(
            f"  partition {p}: {choice.n_targets} targets, {n_bricks} bricks -> {choice.mode} "
            f"(service {choice.service_s:.0f} s, bricks {choice.bricks_s:.0f} s)"
        )


def main() -> None:
    """Time both renderers and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sky", type=Path, required=True, help="a generated sample sky folder")
    parser.add_argument("--release", default="edr")
    parser.add_argument("--n", type=int, default=100, help="cutouts timed per renderer")
    parser.add_argument("--baseline-rev", default="1eca05e", help="git revision before bricks")
    args = parser.parse_args()
    truth = pq.read_table(truth_path(args.sky, args.release), columns=["ls_ra", "ls_dec"])
    ra, dec = (truth[c].to_numpy(zero_copy_only=False) for c in ("ls_ra", "ls_dec"))
    keep = np.flatnonzero(np.isfinite(ra.astype(float)))
    pick = np.random.default_rng(0).choice(keep, size=min(args.n, keep.size), replace=False)
    positions = [(float(ra[i]), float(dec[i])) for i in pick]
    old = baseline_module(args.baseline_rev)
    t_old = time_renderer(old.CutoutRenderer(args.sky), old.CutoutRequest, positions)
    t_new = time_renderer(CutoutRenderer(args.sky), CutoutRequest, positions)
    print(f"{len(positions)} cutouts of 152x152 g,r,z from {args.sky} ({args.release})")
    print(f"  before (rev {args.baseline_rev}, own grid): {t_old * 1000:.1f} ms/cutout")
    print(f"  now (cut from bricks):                {t_new * 1000:.1f} ms/cutout")
    print(f"  ratio now/before: {t_new / t_old:.2f}")
    print("--imaging auto, per partition (ImagingCost defaults):")
    print_decisions(args.sky, ra[keep].astype(float), dec[keep].astype(float))


if __name__ == "__main__":
    main()
