"""Count imaging sources claimed from both sides of a partition border, on a grown sample sky.

Runs the ingest's catalogue, imaging-sources and cross-match steps (the library functions the
Dagster assets call) for every partition of one release of the sample sky grown ``--scale``
times, against the loopback sample-sky server, then reports:

- ``contested``: sources within the match radius of spectra in two (or more) partitions, summed
  from the cross-match metadata (each is won by exactly one partition);
- ``ceded`` and ``spectra_lost_nearest``: the claims the losing partitions dropped, and their
  spectra whose nearest source that was;
- ``used_twice_without_rule``: the sources the per-partition match without the cross-partition
  rule (``rivals=None``) pairs with spectra of two partitions, i.e. how often the problem the
  rule fixes happened;
- ``used_twice``: the same over the matches the steps wrote (must be 0).

Coadd files and cutouts are not needed, so only catalogues and sweeps are fetched.

    .venv/bin/python bench/count_border_sources.py --scale 16 --work /tmp/border16
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from astroclip_core.formats.desi import GalaxySelection  # noqa: E402
from astroclip_core.ingest.catalog import build_release_catalog, partition_targets  # noqa: E402
from astroclip_core.ingest.imaging import fetch_partition_sources  # noqa: E402
from astroclip_core.ingest.match import match_partition_stage  # noqa: E402
from astroclip_core.samplesky.config import preset  # noqa: E402
from astroclip_core.samplesky.service import ensure_published, start_server  # noqa: E402
from astroclip_core.sky.healpix import PARTITION_NSIDE, HealpixPixel, parse_partition_key  # noqa: E402
from astroclip_core.sky.partition_match import (  # noqa: E402
    SourcePositions,
    SpectraPositions,
    match_partition,
)
from astroclip_core.sources.desi import DesiSource  # noqa: E402
from astroclip_core.sources.legacysurvey import LegacySurveySource  # noqa: E402
from astroclip_core.storage import StorageLayout  # noqa: E402
from astroclip_core.tables.interim import read_interim  # noqa: E402


def _source_keys(table, rows: np.ndarray) -> list[tuple[int, int, int]]:
    cols = [table.column(c).to_numpy()[rows] for c in ("release", "brickid", "objid")]
    return list(zip(*(c.tolist() for c in cols), strict=True))


def _used_without_rule(layout: StorageLayout, release: str, pixel: int) -> list[tuple[int, ...]]:
    """Source keys the per-partition match alone (no rivals) pairs in this partition."""
    sources = read_interim(layout, "sources", release, pixel)
    targets = partition_targets(layout, release, pixel)
    match = match_partition(
        SpectraPositions(
            targets.column("target_ra").to_numpy(), targets.column("target_dec").to_numpy()
        ),
        SourcePositions(sources.column("ra").to_numpy(), sources.column("dec").to_numpy()),
        HealpixPixel(PARTITION_NSIDE, pixel),
    )
    return _source_keys(sources, match.source_idx)


def _used_with_rule(layout: StorageLayout, release: str, pixel: int) -> list[tuple[int, ...]]:
    matches = read_interim(layout, "matches", release, pixel)
    cols = [matches.column(c).to_numpy() for c in ("ls_release", "brickid", "objid")]
    return list(zip(*(c.tolist() for c in cols), strict=True))


def _twice(keys_per_partition: list[list[tuple[int, ...]]]) -> int:
    counts = collections.Counter(k for keys in keys_per_partition for k in keys)
    return sum(1 for n in counts.values() if n > 1)


def main() -> int:
    """Generate (if missing), run catalogue/sources/matches per partition, print the counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="default", help="sample-sky size preset")
    parser.add_argument("--scale", type=int, default=16, help="sample-sky scale (default 16)")
    parser.add_argument("--release", default="edr")
    parser.add_argument("--work", type=Path, required=True, help="folder for the sky and data")
    args = parser.parse_args()
    t0 = time.perf_counter()
    sky_root, layout = args.work / "samplesky", StorageLayout(str(args.work / "data"))
    ensure_published(sky_root, [args.release], size=args.size, scale=args.scale)
    t_sky = time.perf_counter() - t0
    release = preset(args.size, scale=args.scale).footprint(args.release).release
    server = start_server(sky_root)
    try:
        desi = DesiSource(release=release, root_url=server.desi_root_url)
        imaging = LegacySurveySource(
            root_url=server.legacysurvey_root_url, cutout_url=server.cutout_url
        )
        catalog = build_release_catalog(desi, layout, GalaxySelection())
        totals = collections.Counter()
        with_rule, without_rule = [], []
        for key in catalog.partition_keys:
            _, pixel = parse_partition_key(key)
            fetch_partition_sources(imaging, layout, args.release, pixel)
            md = match_partition_stage(layout, args.release, pixel).metadata
            for name in (
                "spectra",
                "matched",
                "conflicts_resolved",
                "border_sources_contested",
                "border_sources_ceded",
                "border_spectra_lost_nearest",
            ):
                totals[name] += int(md[name])
            with_rule.append(_used_with_rule(layout, args.release, pixel))
            without_rule.append(_used_without_rule(layout, args.release, pixel))
    finally:
        server.stop()
    report = {
        "release": args.release,
        "size": args.size,
        "scale": args.scale,
        "partitions": len(catalog.partition_keys),
        "spectra": totals["spectra"],
        "matched": totals["matched"],
        "within_partition_conflicts": totals["conflicts_resolved"],
        "contested": totals["border_sources_contested"] - totals["border_sources_ceded"],
        "ceded": totals["border_sources_ceded"],
        "spectra_lost_nearest": totals["border_spectra_lost_nearest"],
        "used_twice_without_rule": _twice(without_rule),
        "used_twice": _twice(with_rule),
        "sky_seconds": round(t_sky, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(report, indent=1))
    return 0 if report["used_twice"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
