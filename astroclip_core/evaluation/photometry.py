"""Catalogue-photometry features of the baselines, in asinh magnitudes.

The k-NN baseline uses (g−r, r−z, z); the MLP baseline (the AstroCLIP paper's photometry
row) uses all three band magnitudes and both colours, (g, r, z, g−r, r−z).

Fluxes are Legacy Surveys catalogue fluxes in nanomaggies, which can be zero or negative for
faint sources. Logarithmic magnitudes are undefined there, so the features use asinh
magnitudes (Lupton, Gunn & Szalay 1999)::

    m = 22.5 - (2.5 / ln 10) * (asinh(f / (2 b)) + ln b)

which equal 22.5 - 2.5 log10(f) for f >> b and stay finite and monotonic through zero. The
softening b of each band is about the 1-sigma point-source flux noise of DR9 (g ≈ 25.7,
r ≈ 25.1, z ≈ 24.2 mag). Non-finite fluxes are an error, not a silent zero.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

PHOTOMETRY_BANDS = ("g", "r", "z")
SOFTENING_NANOMAGGY: dict[str, float] = {"g": 0.05, "r": 0.09, "z": 0.2}
FEATURE_NAMES = ("g-r", "r-z", "z_mag")
MLP_FEATURE_NAMES = ("g_mag", "r_mag", "z_mag", "g-r", "r-z")


def asinh_magnitude(flux_nanomaggy: np.ndarray, softening_nanomaggy: float) -> np.ndarray:
    """Asinh magnitude (AB, zero point 22.5) of fluxes in nanomaggies; finite for any finite flux."""
    flux = np.asarray(flux_nanomaggy, dtype=np.float64)
    b = float(softening_nanomaggy)
    if b <= 0:
        raise ValueError(f"softening must be positive, got {b}")
    return 22.5 - (2.5 / np.log(10.0)) * (np.arcsinh(flux / (2.0 * b)) + np.log(b))


def band_magnitudes(table: pa.Table) -> dict[str, np.ndarray]:
    """Asinh magnitude (N,) float64 per band g, r, z from columns flux_g, flux_r, flux_z
    (nanomaggies). Raises ValueError naming the column when it is missing or holds
    null/NaN/inf values."""
    mags = {}
    for band in PHOTOMETRY_BANDS:
        column = f"flux_{band}"
        if column not in table.column_names:
            raise ValueError(f"photometry table lacks column {column!r}")
        flux = table.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
        bad = ~np.isfinite(flux)
        if bad.any():
            raise ValueError(
                f"photometry column {column!r} has {int(bad.sum())} null/NaN/inf values"
            )
        mags[band] = asinh_magnitude(flux, SOFTENING_NANOMAGGY[band])
    return mags


def photometry_features(table: pa.Table) -> np.ndarray:
    """(N, 3) float64 k-NN features (g−r, r−z, z) (:func:`band_magnitudes` for the columns)."""
    mags = band_magnitudes(table)
    return np.stack([mags["g"] - mags["r"], mags["r"] - mags["z"], mags["z"]], axis=1)


def photometry_mlp_features(table: pa.Table) -> np.ndarray:
    """(N, 5) float64 MLP features :data:`MLP_FEATURE_NAMES`: (g, r, z, g−r, r−z)."""
    mags = band_magnitudes(table)
    g, r, z = mags["g"], mags["r"], mags["z"]
    return np.stack([g, r, z, g - r, r - z], axis=1)


def standardise(train: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale both (N, F) arrays by the train mean and std per feature.

    A feature that is constant on the train rows carries no information; its std is taken as 1
    so that it stays constant (and ignored by distances) instead of dividing by zero.
    """
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (other - mean) / std
