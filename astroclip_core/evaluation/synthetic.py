"""Synthetic embeddings, photometry, truth and pixels where the right answers are known.

Used by the tests and the benchmark, and handy for trying the evaluation in a notebook without a
trained model:

- ``informative=True``: both modalities of a galaxy share one vector whose first two components
  place the redshift on a quarter circle, plus a small per-galaxy random part. The k-NN then
  recovers z (R² near 1) and every galaxy's partner is its nearest cross-modal neighbour
  (recall@1 = 1).
- ``informative=False``: independent Gaussian vectors per galaxy and modality: R² near 0 (or
  below) and a median partner rank near N/2.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from astroclip_core.evaluation.images import GalaxyImages
from astroclip_core.formats.desi import WAVELENGTH
from astroclip_core.tables.schemas import IMAGE_SIZE_PIX, embeddings_schema, encode_blob
from astroclip_core.tables.splits import split_of

Z_MAX = 1.5
EMISSION_LINES_ANGSTROM = (3727.0, 4861.0, 4959.0, 5007.0, 6563.0)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def synthetic_embeddings(
    n: int, dim: int = 16, informative: bool = True, seed: int = 0, model: str = "synthetic-0"
) -> pa.Table:
    """An embeddings table (:func:`embeddings_schema`) of ``n`` galaxies with z in (0.01, 1.5).

    The split is the project's deterministic hash split of the synthetic targetids.
    """
    if dim < 3:
        raise ValueError(f"dim must be >= 3, got {dim}")
    rng = np.random.default_rng(seed)
    targetid = np.arange(n, dtype=np.int64) * 7919 + 39627000000000000
    z = rng.uniform(0.01, Z_MAX, n)
    if informative:
        angle = 0.5 * np.pi * z / Z_MAX  # (n,) quarter circle
        shared = np.zeros((n, dim))
        shared[:, 0], shared[:, 1] = np.cos(angle), np.sin(angle)
        shared[:, 2:] = 0.03 * _unit(rng.normal(size=(n, dim - 2)))  # galaxy identity
        image = shared + 1e-4 * rng.normal(size=(n, dim))
        spectrum = shared + 1e-4 * rng.normal(size=(n, dim))
    else:
        image, spectrum = rng.normal(size=(n, dim)), rng.normal(size=(n, dim))
    ra = rng.uniform(150.0, 160.0, n)
    dec = rng.uniform(0.0, 5.0, n)
    columns = {
        "targetid": targetid,
        "healpix": np.full(n, 1234, dtype=np.int32),
        "ra": ra,
        "dec": dec,
        "z": z,
        "split": split_of(targetid).tolist(),
        "image_embedding": list(image.astype(np.float32)),
        "spectrum_embedding": list(spectrum.astype(np.float32)),
        "model": [model] * n,
    }
    return pa.table(columns, schema=embeddings_schema(dim))


def synthetic_photometry(embeddings: pa.Table, seed: int = 1) -> pa.Table:
    """targetid, flux_g/r/z (nanomaggies) that redden and fade with z; faint ones go negative."""
    rng = np.random.default_rng(seed)
    z = embeddings.column("z").to_numpy()
    flux_z = 40.0 * np.exp(-2.5 * z)  # nanomaggies
    flux_r = flux_z * 10 ** (-0.4 * (0.3 + 0.5 * z))
    flux_g = flux_r * 10 ** (-0.4 * (0.4 + 1.0 * z))
    noise = rng.normal(0.0, 0.05, size=(3, z.size))
    return pa.table(
        {
            "targetid": embeddings.column("targetid"),
            "flux_g": (flux_g + noise[0]).astype(np.float32),
            "flux_r": (flux_r + noise[1]).astype(np.float32),
            "flux_z": (flux_z + noise[2]).astype(np.float32),
        }
    )


def synthetic_truth(embeddings: pa.Table) -> pa.Table:
    """targetid, log_mstar, log_ssfr, metallicity as smooth functions of z."""
    z = embeddings.column("z").to_numpy()
    return pa.table(
        {
            "targetid": embeddings.column("targetid"),
            "log_mstar": 9.5 + 1.2 * z,
            "log_ssfr": -10.5 + 0.8 * z,
            "metallicity": 0.02 - 0.008 * z,
        }
    )


def synthetic_galaxy_images(
    embeddings: pa.Table, size_pix: int = 32, seed: int = 3
) -> GalaxyImages:
    """Small g,r,z images (N, 3, size, size) in nanomaggies whose size, colour and brightness
    follow z (so a CNN can learn z from them), plus Gaussian sky noise; for fast CNN tests."""
    rng = np.random.default_rng(seed)
    z = embeddings.column("z").to_numpy()[:, None, None, None]  # (N, 1, 1, 1)
    yy, xx = np.mgrid[:size_pix, :size_pix] - (size_pix - 1) / 2.0  # (S, S) px from centre
    radius_pix = 1.0 + 0.5 * size_pix / (1.0 + 3.0 * z)  # (N, 1, 1, 1) shrinks with z
    fading = np.array([2.0, 1.5, 1.0])[None, :, None, None]  # g fades fastest: reddens with z
    peak_nmgy = np.array([0.4, 0.7, 1.0])[None, :, None, None] * np.exp(-fading * z)
    images = peak_nmgy * np.exp(-np.hypot(xx, yy) / radius_pix)  # (N, 3, S, S)
    images += rng.normal(0.0, 0.005, images.shape)
    return GalaxyImages(embeddings.column("targetid").to_numpy(), images.astype(np.float32))


def synthetic_pairs_pixels(embeddings: pa.Table, seed: int = 2) -> pa.Table:
    """targetid, z, image, flux, mask (pairs blob encoding) for display tests and demos.

    About 0.3 MB per galaxy: pass a slice of the table for more than a few hundred. Images are
    elliptical Sérsic-like blobs that redden with z; spectra are a sloped continuum
    with emission lines at (1+z) times their rest wavelengths, plus noise.
    """
    rng = np.random.default_rng(seed)
    z = embeddings.column("z").to_numpy()
    n = z.size
    size_pix = IMAGE_SIZE_PIX
    yy, xx = np.mgrid[:size_pix, :size_pix] - (size_pix - 1) / 2.0  # (H, W) pixels from centre
    images = np.empty((n, 3, size_pix, size_pix), dtype=np.float32)
    fluxes = np.empty((n, WAVELENGTH.size), dtype=np.float32)
    for i in range(n):
        theta, q = rng.uniform(0, np.pi), rng.uniform(0.4, 1.0)
        u = xx * np.cos(theta) + yy * np.sin(theta)
        v = (-xx * np.sin(theta) + yy * np.cos(theta)) / q
        radius_pix = 8.0 / (1 + 2 * z[i])
        profile = np.exp(-np.hypot(u, v) / radius_pix)  # (H, W)
        colour = np.array([0.4 - 0.2 * z[i], 0.7, 1.0]) * 0.5 / (1 + z[i]) ** 2
        images[i] = colour[:, None, None] * profile + rng.normal(0, 0.003, (3, size_pix, size_pix))
        continuum = 1.0 + 0.3 * (WAVELENGTH - 6000.0) / 3000.0
        lines = sum(
            4.0 * np.exp(-0.5 * ((WAVELENGTH - (1 + z[i]) * rest) / 3.0) ** 2)
            for rest in EMISSION_LINES_ANGSTROM
        )
        fluxes[i] = continuum + lines + rng.normal(0, 0.3, WAVELENGTH.size)
    mask = np.zeros((n, WAVELENGTH.size), dtype=np.uint8)
    mask[:, 2700:2760] = 1  # a bad stretch near the b/r arm overlap
    return pa.table(
        {
            "targetid": embeddings.column("targetid"),
            "z": pa.array(z),
            "image": encode_blob("image", images),
            "flux": encode_blob("flux", fluxes),
            "mask": encode_blob("mask", mask),
        }
    )
