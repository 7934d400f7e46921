"""Shared plotting helpers: RGB renderings of g,r,z cutouts, the one spectrum smoother,
image/spectrum panels, and PNG rendering.

Every figure in the project is a ``matplotlib.figure.Figure`` drawn through its object API and
turned into PNG bytes by :func:`render_png` on the Agg canvas, never through pyplot: no global
backend or figure state is touched (safe in Dagster workers and threads) and no figure is left
open to close.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from astroclip_core.formats.desi import WAVELENGTH

# Per-band gains for the RGB rendering (z->red, r->green, g->blue), chosen so that passive
# galaxies look orange-red and star-forming ones blue, as in the Legacy Surveys viewer.
RGB_BAND_GAINS = np.array([6.0, 3.4, 2.2])  # g, r, z
PNG_DPI = 120
PREVIEW_SMOOTH_PIX = 9  # 7.2 Å box in the pairs preview


def rgb_image(image: np.ndarray, q: float = 8.0, stretch: float = 0.4) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] of a (3, H, W) g, r, z cutout (Lupton-style asinh stretch)."""
    img = np.clip(np.asarray(image, dtype=np.float64) * RGB_BAND_GAINS[:, None, None], 0, None)
    total = img.mean(axis=0) + 1e-12  # (H, W)
    factor = np.arcsinh(q * total / stretch) / (q * total)
    rgb = np.stack([img[2], img[1], img[0]], axis=-1) * factor[..., None]  # (H, W, 3)
    return np.clip(rgb / max(float(rgb.max()), 1e-12) * 1.3, 0, 1)


def smooth_spectrum(flux: np.ndarray, weight: np.ndarray, width_pix: int) -> np.ndarray:
    """Weighted boxcar mean (7781,) of a spectrum over ``width_pix`` pixels; NaN where no weight.

    ``weight`` (7781,) is the inverse variance for an inverse-variance-weighted mean, or a
    good-pixel mask (bool) for a plain mean of the good pixels. Pixels with weight <= 0 or a
    non-finite flux count for nothing.
    """
    w = np.clip(np.asarray(weight, dtype=np.float64), 0.0, None)
    w = np.where(np.isfinite(flux), w, 0.0)
    kernel = np.ones(width_pix)
    num = np.convolve(np.where(w > 0, flux * w, 0.0), kernel, mode="same")
    den = np.convolve(w, kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def render_png(fig: Figure, dpi: float = PNG_DPI, bbox_inches: str | None = None) -> bytes:
    """PNG bytes of ``fig`` drawn on an Agg canvas (``bbox_inches="tight"`` crops the margins)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches=bbox_inches)
    return buf.getvalue()


def pairs_figure(
    images: np.ndarray, flux: np.ndarray, ivar: np.ndarray, z: np.ndarray, targetid: np.ndarray
) -> Figure:
    """A figure with one row per pair: RGB cutout beside its smoothed spectrum.

    ``images`` is (N, 3, H, W) nanomaggies, ``flux`` and ``ivar`` (N, 7781), ``z`` and
    ``targetid`` (N,).
    """
    n = len(images)
    fig = Figure(figsize=(11, 1.9 * n), layout="tight")
    axes = fig.subplots(n, 2, gridspec_kw={"width_ratios": [1, 4]}, squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(rgb_image(images[i]), origin="lower")
        axes[i, 0].set_axis_off()
        smoothed = smooth_spectrum(flux[i], ivar[i], PREVIEW_SMOOTH_PIX)
        axes[i, 1].plot(WAVELENGTH, smoothed, lw=0.6, color="k")
        axes[i, 1].set_title(f"TARGETID {int(targetid[i])}  z={float(z[i]):.3f}", fontsize=8)
        axes[i, 1].tick_params(labelsize=7)
    axes[-1, 1].set_xlabel("wavelength [Å]")
    return fig
