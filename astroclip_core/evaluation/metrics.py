"""Regression metrics: R², and the photometric-redshift metrics on Δz/(1+z).

Definitions (Δz = z_pred - z_true, x = Δz / (1 + z_true)):

- ``r2``: 1 - Σ(y - ŷ)² / Σ(y - ȳ)², NaN when the truth is constant (R² is undefined).
- ``sigma_nmad``: 1.4826 · median(|x - median(x)|), the normalised median absolute deviation.
- ``outlier_fraction``: fraction of |x| > 0.15 (the catastrophic-outlier cut).
- ``bias``: median(x). The median, not the mean, so that the few catastrophic outliers do not
  dominate it; the mean of x is reported apart as ``mean_bias``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NMAD_SCALE = 1.4826  # makes the MAD a consistent estimator of a Gaussian's sigma
OUTLIER_THRESHOLD = 0.15


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(
            f"need two 1-d arrays of one length, got {y_true.shape} and {y_pred.shape}"
        )
    if y_true.size == 0:
        raise ValueError("metrics need at least one value")
    for name, arr in (("y_true", y_true), ("y_pred", y_pred)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} holds {int((~np.isfinite(arr)).sum())} NaN or inf values")
    return y_true, y_pred


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination of ``y_pred`` for ``y_true`` (NaN when y_true is constant)."""
    y_true, y_pred = _pair(y_true, y_pred)
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    if ss_tot == 0.0:
        return float("nan")
    return 1.0 - float(np.sum((y_true - y_pred) ** 2)) / ss_tot


def normalised_redshift_error(z_true: np.ndarray, z_pred: np.ndarray) -> np.ndarray:
    """Δz / (1 + z_true) with Δz = z_pred - z_true."""
    z_true, z_pred = _pair(z_true, z_pred)
    if (z_true <= -1).any():
        raise ValueError("z_true holds values <= -1, where 1 + z is not positive")
    return (z_pred - z_true) / (1.0 + z_true)


def sigma_nmad(x: np.ndarray) -> float:
    """1.4826 · median(|x - median(x)|) of a 1-d array."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size == 0 or not np.isfinite(x).all():
        raise ValueError(f"sigma_nmad needs a non-empty finite 1-d array, got shape {x.shape}")
    return NMAD_SCALE * float(np.median(np.abs(x - np.median(x))))


def outlier_fraction(x: np.ndarray, threshold: float = OUTLIER_THRESHOLD) -> float:
    """Fraction of |x| > ``threshold`` (x = Δz/(1+z))."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"outlier_fraction needs a non-empty 1-d array, got shape {x.shape}")
    return float(np.mean(np.abs(x) > threshold))


@dataclass(frozen=True)
class RedshiftMetrics:
    """Point-estimate quality of predicted redshifts on ``n`` galaxies."""

    r2: float
    sigma_nmad: float
    outlier_fraction: float
    bias: float  # median of Δz/(1+z)
    mean_bias: float  # mean of Δz/(1+z)
    n: int


def redshift_metrics(z_true: np.ndarray, z_pred: np.ndarray) -> RedshiftMetrics:
    """R², σ_NMAD, outlier fraction and bias of predicted against true redshifts."""
    x = normalised_redshift_error(z_true, z_pred)
    return RedshiftMetrics(
        r2=r2_score(z_true, z_pred),
        sigma_nmad=sigma_nmad(x),
        outlier_fraction=outlier_fraction(x),
        bias=float(np.median(x)),
        mean_bias=float(np.mean(x)),
        n=int(x.size),
    )
