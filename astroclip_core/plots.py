"""Shared plotting helpers: RGB renderings of g,r,z cutouts and image/spectrum panels."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from astroclip_core.formats.desi import WAVELENGTH  # noqa: E402

# Per-band softening (nanomaggies) for the asinh stretch, roughly DR9 sky noise.
RGB_SOFTENING_NMGY = (0.015, 0.02, 0.06)


def rgb_image(image: np.ndarray, q: float = 8.0) -> np.ndarray:
    """An (H, W, 3) float RGB in [0, 1] from a (3, H, W) g,r,z cutout (asinh stretch, z->red)."""
    g, r, z = (np.asarray(image[i], dtype=np.float64) / s for i, s in enumerate(RGB_SOFTENING_NMGY))
    rgb = np.stack([z, r, g], axis=-1)
    stretched = np.arcsinh(np.clip(rgb, 0, None) / q) / np.arcsinh(50.0 / q)
    return np.clip(stretched, 0.0, 1.0)


def smooth(flux: np.ndarray, ivar: np.ndarray, width_pix: int = 9) -> np.ndarray:
    """Inverse-variance-weighted boxcar smoothing of a spectrum (NaN where no data)."""
    kernel = np.ones(width_pix)
    num = np.convolve(np.where(ivar > 0, flux * ivar, 0.0), kernel, mode="same")
    den = np.convolve(np.clip(ivar, 0, None), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def pairs_figure(
    images: np.ndarray, flux: np.ndarray, ivar: np.ndarray, z: np.ndarray, targetid: np.ndarray
) -> plt.Figure:
    """A figure with one row per pair: RGB cutout beside its smoothed spectrum."""
    n = len(images)
    fig, axes = plt.subplots(
        n, 2, figsize=(11, 1.9 * n), gridspec_kw={"width_ratios": [1, 4]}, squeeze=False
    )
    for i in range(n):
        axes[i, 0].imshow(rgb_image(images[i]), origin="lower")
        axes[i, 0].set_axis_off()
        axes[i, 1].plot(WAVELENGTH, smooth(flux[i], ivar[i]), lw=0.6, color="k")
        axes[i, 1].set_title(f"TARGETID {int(targetid[i])}  z={float(z[i]):.3f}", fontsize=8)
        axes[i, 1].tick_params(labelsize=7)
    axes[-1, 1].set_xlabel("wavelength [Å]")
    fig.tight_layout()
    return fig
