"""Shared plotting helpers: RGB renderings of g,r,z cutouts and image/spectrum panels."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from astroclip_core.formats.desi import WAVELENGTH  # noqa: E402

# Per-band gains for the RGB rendering (z->red, r->green, g->blue), chosen so that passive
# galaxies look orange-red and star-forming ones blue, as in the Legacy Surveys viewer.
RGB_BAND_GAINS = np.array([6.0, 3.4, 2.2])  # g, r, z


def rgb_image(image: np.ndarray, q: float = 8.0, stretch: float = 0.4) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] of a (3, H, W) g, r, z cutout (Lupton-style asinh stretch)."""
    img = np.clip(np.asarray(image, dtype=np.float64) * RGB_BAND_GAINS[:, None, None], 0, None)
    total = img.mean(axis=0) + 1e-12  # (H, W)
    factor = np.arcsinh(q * total / stretch) / (q * total)
    rgb = np.stack([img[2], img[1], img[0]], axis=-1) * factor[..., None]  # (H, W, 3)
    return np.clip(rgb / max(float(rgb.max()), 1e-12) * 1.3, 0, 1)


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
