"""Evaluation figures: embedding PCA coloured by redshift, and k-NN redshift against truth.

Figures are ``matplotlib.figure.Figure`` objects drawn through the object API, never pyplot;
:func:`astroclip_core.plots.render_png` turns one into PNG bytes for an atomic write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from astroclip_core.evaluation.metrics import OUTLIER_THRESHOLD, RedshiftMetrics

# Points drawn per modality in the PCA figure (a fixed random subset of larger tables).
PCA_MAX_POINTS = 20_000
QUERY_TITLES = {
    "image": "image → image bank",
    "spectrum": "spectrum → spectrum bank",
    "image_to_spectrum": "image → spectrum bank",
    "photometry": "photometry baseline",
}


@dataclass(frozen=True, eq=False)
class PcaProjection:
    """Both modalities projected on the first two principal axes of their union."""

    image: np.ndarray  # (M, 2)
    spectrum: np.ndarray  # (M, 2)
    z: np.ndarray  # (M,)
    explained_variance_ratio: np.ndarray  # (2,)


def pca_projection(
    image: np.ndarray, spectrum: np.ndarray, z: np.ndarray, max_points: int = PCA_MAX_POINTS
) -> PcaProjection:
    """Fit one PCA on the image and spectrum embeddings (N, D) together and project both.

    One shared basis (rather than one PCA per modality) puts both panels on the same axes, so an
    aligned embedding space shows up as two matching pictures.
    """
    n = image.shape[0]
    rows = np.arange(n)
    if n > max_points:
        rows = np.sort(np.random.default_rng(0).choice(n, max_points, replace=False))
    both = np.concatenate([image[rows], spectrum[rows]]).astype(np.float64)  # (2M, D)
    mean = both.mean(axis=0)
    cov = np.cov(both - mean, rowvar=False)  # (D, D)
    eigval, eigvec = np.linalg.eigh(cov)  # ascending
    axes = eigvec[:, ::-1][:, :2]  # (D, 2)
    total = float(eigval.sum())
    ratio = eigval[::-1][:2] / total if total > 0 else np.zeros(2)
    return PcaProjection(
        image=(image[rows] - mean) @ axes,
        spectrum=(spectrum[rows] - mean) @ axes,
        z=np.asarray(z, dtype=np.float64)[rows],
        explained_variance_ratio=ratio,
    )


def pca_figure(pca: PcaProjection, model: str = "") -> Figure:
    """Two panels (image, spectrum) of PC1 vs PC2, coloured by redshift, on shared axes."""
    fig = Figure(figsize=(10.5, 4.6), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    vmin, vmax = np.percentile(pca.z, [1, 99]) if pca.z.size else (0.0, 1.0)
    size = float(np.clip(4000 / max(pca.z.size, 1), 1, 20))
    order = np.argsort(pca.z)  # draw high z last so it stays visible
    for ax, points, name in zip(
        axes, (pca.image, pca.spectrum), ("image", "spectrum"), strict=True
    ):
        sc = ax.scatter(
            points[order, 0],
            points[order, 1],
            c=pca.z[order],
            s=size,
            cmap="viridis",
            vmin=vmin,
            vmax=vmax,
            linewidths=0,
        )
        ax.set_title(f"{name} embeddings (N={pca.z.size})")
        ax.set_xlabel(f"PC1 ({100 * pca.explained_variance_ratio[0]:.1f}% of variance)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"PC2 ({100 * pca.explained_variance_ratio[1]:.1f}% of variance)")
    fig.colorbar(sc, ax=axes, label="redshift z", shrink=0.9)
    fig.suptitle(f"PCA of the shared embedding space{f' — {model}' if model else ''}")
    return fig


def redshift_figure(
    z_true: np.ndarray,
    z_pred: Mapping[str, np.ndarray],
    metrics: Mapping[str, RedshiftMetrics] | None = None,
) -> Figure:
    """One panel per query type: k-NN predicted against true redshift, with the 1:1 line and
    the ±0.15(1+z) outlier bounds, and R², σ_NMAD and outlier fraction in the corner."""
    n_panels = len(z_pred)
    ncols = min(n_panels, 2)
    nrows = int(np.ceil(n_panels / ncols))
    fig = Figure(figsize=(5.0 * ncols, 4.6 * nrows), layout="constrained")
    axes = np.atleast_1d(
        fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    ).ravel()
    lo = 0.0
    hi = float(max(np.max(z_true), *(np.max(p) for p in z_pred.values()))) * 1.05 or 1.0
    line = np.linspace(lo, hi, 50)
    alpha = float(np.clip(2000 / max(z_true.size, 1), 0.05, 0.8))
    for ax, (query, pred) in zip(axes, z_pred.items(), strict=False):
        ax.scatter(z_true, pred, s=6, alpha=alpha, color="tab:blue", linewidths=0)
        ax.plot(line, line, color="k", lw=1)
        for sign in (-1, 1):
            ax.plot(line, line + sign * OUTLIER_THRESHOLD * (1 + line), "k--", lw=0.7, alpha=0.6)
        if metrics is not None and query in metrics:
            m = metrics[query]
            text = f"R² = {m.r2:.3f}\nσ_NMAD = {m.sigma_nmad:.4f}\noutliers = {100 * m.outlier_fraction:.1f}%\nN = {m.n}"
            ax.text(
                0.04,
                0.96,
                text,
                transform=ax.transAxes,
                va="top",
                fontsize=9,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.7"},
            )
        ax.set_title(QUERY_TITLES.get(query, query))
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.set_xlabel("true z")
        ax.set_ylabel("k-NN predicted z")
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    fig.suptitle(f"Zero-shot k-NN redshift on the test split (N={z_true.size})")
    return fig
