"""DESI formats: wavelength grids (the readers and writers are added below)."""

from __future__ import annotations

import numpy as np

WAVELENGTH_STEP_ANGSTROM = 0.8
# Arm grids, linear at 0.8 A (checked on a real fuji coadd): (min, max, npix)
ARM_GRIDS_ANGSTROM: dict[str, tuple[float, float, int]] = {
    "B": (3600.0, 5800.0, 2751),
    "R": (5760.0, 7620.0, 2326),
    "Z": (7520.0, 9824.0, 2881),
}
ARMS = ("B", "R", "Z")
N_WAVELENGTH = 7781
# The merged grid: 3600.0 .. 9824.0 A, 7781 pixels (float64). Fixed interface.
WAVELENGTH = np.round(3600.0 + WAVELENGTH_STEP_ANGSTROM * np.arange(N_WAVELENGTH), 4)


def arm_wavelength(arm: str) -> np.ndarray:
    """The float64 wavelength grid (Angstrom) of arm 'B', 'R' or 'Z'."""
    lo, _hi, n = ARM_GRIDS_ANGSTROM[arm]
    return np.round(lo + WAVELENGTH_STEP_ANGSTROM * np.arange(n), 4)
