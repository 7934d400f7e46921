"""Benchmark astroclip_core.sky.crossmatch against astropy at 1M x 1M, 1", DESI-like density.

Each method runs in its own subprocess on the same catalogues (written once to a temporary
.npz), so its peak resident memory can be read from ``ru_maxrss``; the parent checks that all
three give identical matches and prints seconds (best of ``--repeat``), peak memory and the
speedup against the faster astropy call (goal: >= 3x).

    .venv/bin/python bench/bench_crossmatch.py            # ~1 min on 2 shared cores
    .venv/bin/python bench/bench_crossmatch.py --n 200000 # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord, search_around_sky

# Runnable from a checkout without `pip install -e .`: put the repository root on sys.path.
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from astroclip_core.sky import crossmatch  # noqa: E402

METHODS = ("ours", "astropy_match", "astropy_search")


@dataclass(frozen=True)
class SkySetup:
    """Synthetic catalogues: cat2 holds jittered copies of a fraction of cat1 plus unrelated sources."""

    n: int = 1_000_000  # positions in each catalogue
    ra_min_deg: float = 150.0
    ra_max_deg: float = 180.0
    dec_min_deg: float = 0.0
    dec_max_deg: float = 20.0  # 30 x 20 deg box: ~560 deg^2, ~1,800 per deg^2 at 1M
    counterpart_fraction: float = 0.7
    jitter_arcsec: float = 0.3  # per-axis Gaussian sigma
    seed: int = 1


def make_catalogues(setup: SkySetup) -> dict[str, np.ndarray]:
    """ra1, dec1, ra2, dec2 (deg) uniform on the sphere inside the box, cat2 shuffled."""
    rng = np.random.default_rng(setup.seed)
    sin_lo, sin_hi = np.sin(np.deg2rad([setup.dec_min_deg, setup.dec_max_deg]))

    def uniform(n: int) -> tuple[np.ndarray, np.ndarray]:
        ra = rng.uniform(setup.ra_min_deg, setup.ra_max_deg, n)
        return ra, np.rad2deg(np.arcsin(rng.uniform(sin_lo, sin_hi, n)))

    ra1, dec1 = uniform(setup.n)
    n_pair = int(setup.counterpart_fraction * setup.n)
    sigma_deg = setup.jitter_arcsec / 3600.0
    ra_pair = ra1[:n_pair] + rng.normal(0, sigma_deg, n_pair) / np.cos(np.deg2rad(dec1[:n_pair]))
    dec_pair = dec1[:n_pair] + rng.normal(0, sigma_deg, n_pair)
    ra_other, dec_other = uniform(setup.n - n_pair)
    perm = rng.permutation(setup.n)
    ra2 = np.concatenate([ra_pair, ra_other])[perm]
    dec2 = np.concatenate([dec_pair, dec_other])[perm]
    return {"ra1": ra1, "dec1": dec1, "ra2": ra2, "dec2": dec2}


def run_ours(cat: dict[str, np.ndarray], radius_arcsec: float) -> tuple[np.ndarray, ...]:
    """astroclip_core.sky.crossmatch."""
    return tuple(crossmatch(cat["ra1"], cat["dec1"], cat["ra2"], cat["dec2"], radius_arcsec))


def run_astropy_match(cat: dict[str, np.ndarray], radius_arcsec: float) -> tuple[np.ndarray, ...]:
    """SkyCoord.match_to_catalog_sky followed by the inclusive radius cut."""
    c1 = SkyCoord(cat["ra1"] * u.deg, cat["dec1"] * u.deg)
    c2 = SkyCoord(cat["ra2"] * u.deg, cat["dec2"] * u.deg)
    idx, sep, _ = c1.match_to_catalog_sky(c2)
    sep_arcsec = sep.to_value(u.arcsec)
    ok = sep_arcsec <= radius_arcsec
    return np.flatnonzero(ok), idx[ok].astype(np.int64), sep_arcsec[ok]


def run_astropy_search(cat: dict[str, np.ndarray], radius_arcsec: float) -> tuple[np.ndarray, ...]:
    """search_around_sky, reduced to the nearest catalogue-2 neighbour of each catalogue-1 row."""
    c1 = SkyCoord(cat["ra1"] * u.deg, cat["dec1"] * u.deg)
    c2 = SkyCoord(cat["ra2"] * u.deg, cat["dec2"] * u.deg)
    i1, i2, sep, _ = search_around_sky(c1, c2, radius_arcsec * u.arcsec)
    sep_arcsec = sep.to_value(u.arcsec)
    order = np.lexsort((sep_arcsec, i1))  # by idx1, nearest first
    first = np.ones(order.size, dtype=bool)
    first[1:] = i1[order][1:] != i1[order][:-1]
    pick = order[first]
    return i1[pick].astype(np.int64), i2[pick].astype(np.int64), sep_arcsec[pick]


RUNNERS = {
    "ours": run_ours,
    "astropy_match": run_astropy_match,
    "astropy_search": run_astropy_search,
}


def child(method: str, data_path: Path, out_path: Path, radius_arcsec: float, repeat: int) -> None:
    """Time one method on the stored catalogues; write its matches and print a JSON summary."""
    with np.load(data_path) as stored:
        cat = {name: stored[name] for name in stored.files}
    baseline_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = RUNNERS[method](cat, radius_arcsec)
        seconds.append(time.perf_counter() - start)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.savez(out_path, idx1=result[0], idx2=result[1], sep_arcsec=result[2])
    summary = {"method": method, "best_s": min(seconds), "all_s": seconds}
    summary |= {"peak_rss_mib": peak_mib, "rss_before_mib": baseline_mib}
    print(json.dumps(summary))


def run_method(method: str, data: Path, out: Path, radius: float, repeat: int) -> dict:
    """Run one method in a fresh interpreter and return its JSON summary."""
    command = [sys.executable, __file__, "--child", method, "--data", str(data), "--out", str(out)]
    command += ["--radius", str(radius), "--repeat", str(repeat)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(results: dict[str, dict[str, np.ndarray]]) -> None:
    """Raise SystemExit unless every method gives the same idx1, idx2 and sep (1e-6 arcsec)."""
    ref = results["ours"]
    for method, got in results.items():
        same_idx = np.array_equal(got["idx1"], ref["idx1"]) and np.array_equal(
            got["idx2"], ref["idx2"]
        )
        if not same_idx or np.max(np.abs(got["sep_arcsec"] - ref["sep_arcsec"]), initial=0) > 1e-6:
            raise SystemExit(f"{method} disagrees with ours: matches are not identical")


def main(argv: list[str] | None = None) -> None:
    """Generate catalogues, time the three methods in subprocesses, compare and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=SkySetup.n)
    parser.add_argument("--radius", type=float, default=1.0, help="match radius, arcsec")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per method (best kept)")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.data, args.out, args.radius, args.repeat)
        return

    setup = SkySetup(n=args.n)
    area = (
        np.deg2rad(setup.ra_max_deg - setup.ra_min_deg)
        * np.diff(np.sin(np.deg2rad([setup.dec_min_deg, setup.dec_max_deg])))[0]
        * (180 / np.pi) ** 2
    )
    print(
        f"{setup.n:,} x {setup.n:,} positions over {area:.0f} deg^2 ({setup.n / area:,.0f}/deg^2),"
    )
    print(f'radius {args.radius}", best of {args.repeat}, {os.cpu_count()} CPUs visible')
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "catalogues.npz"
        np.savez(data, **make_catalogues(setup))
        summaries, results = {}, {}
        for method in METHODS:
            out = Path(tmp) / f"{method}.npz"
            summaries[method] = run_method(method, data, out, args.radius, args.repeat)
            with np.load(out) as stored:
                results[method] = {name: stored[name] for name in stored.files}
    compare(results)

    print(f"{'method':<16}{'best s':>8}{'runs s':>18}{'peak RSS MiB':>14}{'over load MiB':>15}")
    for method, s in summaries.items():
        runs = ", ".join(f"{t:.2f}" for t in s["all_s"])
        extra = s["peak_rss_mib"] - s["rss_before_mib"]
        print(f"{method:<16}{s['best_s']:>8.2f}{runs:>18}{s['peak_rss_mib']:>14.0f}{extra:>15.0f}")
    fastest_astropy = min(
        summaries["astropy_match"]["best_s"], summaries["astropy_search"]["best_s"]
    )
    speedup = fastest_astropy / summaries["ours"]["best_s"]
    n_matched = results["ours"]["idx1"].size
    print(f"identical matches from all three methods: {n_matched:,} pairs")
    print(f"speedup vs the faster astropy call: {speedup:.2f}x (goal >= 3x: {speedup >= 3})")


if __name__ == "__main__":
    main()
