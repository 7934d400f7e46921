"""Benchmark: reading + arm-merging a DESI coadd, ours vs the raw fitsio floor vs desispec.

Builds a ~1,000-target coadd with ``write_coadd`` (random but plausible spectra) in a
temporary folder, then in the same run measures spectra/s of
  1. ``read_coadd_arrays`` (our full read + merge) and ``read_coadd`` (+ Arrow table),
  2. the raw fitsio read of FIBERMAP and every *_FLUX, *_IVAR, *_MASK HDU (the I/O floor),
  3. ``desispec.io.read_spectra`` + ``desispec.coaddition.coadd_cameras`` (the reference;
     default call, which also reads and merges the resolution matrices, as users run it),
and prints the ratios against goals (ours/desispec >= 50x, ours within 1.5x of raw), plus
a check that our merged arrays equal desispec's.

Run: ``.venv/bin/python bench/bench_coadd.py [--targets 1000] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import fitsio
import numpy as np

# Runnable from a checkout without `pip install -e .`: put the repository root on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astroclip_core.formats.desi import (  # noqa: E402
    ARM_GRIDS_ANGSTROM,
    ARMS,
    FIBERMAP_COLUMNS,
    arm_wavelength,
    read_coadd,
    read_coadd_arrays,
    write_coadd,
)
from astroclip_core.formats.desi_columns import blank_columns  # noqa: E402


def make_coadd(path: Path, n_targets: int, seed: int = 0) -> None:
    """Write a plausible healpix coadd: red continuum + noise, a few zero-ivar masked pixels."""
    rng = np.random.default_rng(seed)
    fibermap = blank_columns(FIBERMAP_COLUMNS, n_targets)
    fibermap["TARGETID"] = 39627866878500000 + np.arange(n_targets)
    fibermap["TARGET_RA"] = rng.uniform(216.0, 217.0, n_targets)
    fibermap["TARGET_DEC"] = rng.uniform(3.0, 4.0, n_targets)
    fibermap["OBJTYPE"] = "TGT"
    fibermap["COADD_EXPTIME"] = 1000.0
    flux, ivar, mask = {}, {}, {}
    amplitude = rng.lognormal(0.0, 0.5, (n_targets, 1))
    for arm in ARMS:
        wave = arm_wavelength(arm)
        shape = (n_targets, ARM_GRIDS_ANGSTROM[arm][2])
        noise_sigma = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        flux[arm] = (amplitude * (wave / 5000.0) + rng.normal(0, noise_sigma)).astype(np.float32)
        ivar[arm] = (1.0 / noise_sigma**2).astype(np.float32)
        bad = rng.random(shape) < 0.01
        mask[arm] = np.where(bad, np.uint32(1 << 2), np.uint32(0))
        ivar[arm][bad] = 0.0
    header = {"HPXPIXEL": 26065, "SURVEY": "sv3", "PROGRAM": "dark"}
    write_coadd(path, fibermap, flux, ivar, mask, header=header)


def read_raw(path: Path) -> int:
    """The I/O floor: read FIBERMAP and every arm's FLUX, IVAR and MASK with fitsio."""
    with fitsio.FITS(str(path)) as fits:
        n = len(fits["FIBERMAP"].read())
        for arm in ARMS:
            for kind in ("FLUX", "IVAR", "MASK"):
                fits[f"{arm}_{kind}"].read()
    return n


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` calls (least disturbed by other load on the machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def desispec_merge(path: Path) -> tuple[object, float]:
    """desispec's read_spectra + coadd_cameras; returns (merged Spectra, seconds)."""
    logging.getLogger("desiutil").setLevel(logging.WARNING)
    os.environ.setdefault("DESI_LOGLEVEL", "WARNING")
    from desispec.coaddition import coadd_cameras
    from desispec.io import read_spectra

    start = time.perf_counter()
    merged = coadd_cameras(read_spectra(str(path)))
    return merged, time.perf_counter() - start


def main() -> None:
    """Build the coadd, time the three readers, print spectra/s and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-coadd-") as tmp:
        path = Path(tmp) / "coadd-sv3-dark-26065.fits"
        make_coadd(path, args.targets)
        size_mb = path.stat().st_size / 1e6
        print(f"coadd: {args.targets} targets, {size_mb:.0f} MB (incl. resolution) at {path.name}")
        read_raw(path)  # warm the page cache so every reader sees the same I/O state
        t_raw = best_seconds(lambda: read_raw(path), args.repeats)
        t_ours = best_seconds(lambda: read_coadd_arrays(path), args.repeats)
        t_arrow = best_seconds(lambda: read_coadd(path), args.repeats)
        try:
            merged, t_desi = desispec_merge(path)
        except ImportError as err:
            merged, t_desi = None, float("nan")
            print(f"desispec not importable ({err}); install desispec==0.70.0 for the reference")
        n = args.targets
        print(f"raw fitsio read (floor)      : {n / t_raw:10.0f} spectra/s  ({t_raw:.3f} s)")
        print(f"ours read_coadd_arrays       : {n / t_ours:10.0f} spectra/s  ({t_ours:.3f} s)")
        print(f"ours read_coadd (Arrow table): {n / t_arrow:10.0f} spectra/s  ({t_arrow:.3f} s)")
        print(f"desispec read+coadd_cameras  : {n / t_desi:10.0f} spectra/s  ({t_desi:.3f} s)")
        print(f"ours/desispec speedup: {t_desi / t_ours:.1f}x (goal >= 50x)")
        print(f"ours/raw time ratio  : {t_ours / t_raw:.2f} (goal <= 1.5)")
        if merged is not None:
            ours = read_coadd_arrays(path)
            band = merged.bands[0]
            same = (
                np.allclose(ours.flux, merged.flux[band], rtol=1e-5, atol=0)
                and np.allclose(ours.ivar, merged.ivar[band], rtol=1e-5, atol=0)
                and np.array_equal(ours.mask != 0, merged.mask[band] != 0)
            )
            print(f"ours == desispec (flux/ivar rtol 1e-5, masks): {same}")


if __name__ == "__main__":
    main()
