"""Synthetic pairs tables for the model and training tests (plain module, imported by tests).

Each fake galaxy has three latents that drive both modalities, so a contrastive model can
learn to align them (and tell galaxies apart well enough for retrieval): a redshift z in
[0.05, 0.6], a star-formation activity a in [0, 1] and a size/mass s in [0, 1].
- image: a round Gaussian blob; size from s and z, brightness from z, g-r-z colour from z
  and a (bluer when active), plus noise;
- spectrum: a continuum whose level follows s and slope follows z, plus emission lines (OII,
  Hbeta, OIII, Halpha) at their redshifted wavelengths with strength from a, plus noise
  with the ivar it records; a few random pixels are masked (mask=1, ivar=0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from astroclip_core.formats.desi import WAVELENGTH
from astroclip_core.model.config import (
    HeadConfig,
    ImageEncoderConfig,
    LossConfig,
    ModelConfig,
    SpectrumEncoderConfig,
)
from astroclip_core.storage import partition_file
from astroclip_core.tables.schemas import IMAGE_SIZE_PIX, PAIRS_SCHEMA, encode_blob
from astroclip_core.tables.splits import split_of

LINES_ANGSTROM = (3727.0, 4861.0, 5007.0, 6563.0)


def _images(z: np.ndarray, a: np.ndarray, s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # (N, 3, 152, 152) float32 nanomaggies
    n = len(z)
    yy, xx = np.mgrid[:IMAGE_SIZE_PIX, :IMAGE_SIZE_PIX] - (IMAGE_SIZE_PIX - 1) / 2.0
    r2 = (xx**2 + yy**2)[None]  # (1, H, W)
    sigma_pix = 2.5 + (4.0 + 10.0 * s) * (0.7 - z)  # bigger when nearer and more massive
    profile = np.exp(-0.5 * r2 / sigma_pix[:, None, None] ** 2)  # (N, H, W)
    total_nmgy = 200.0 / (1.0 + 5.0 * z) ** 2
    # g, r, z relative fluxes: redder with z, bluer when star-forming
    colour = np.stack([0.4 + 0.8 * a - 0.5 * z, np.ones_like(z), 1.6 - 0.8 * a + 1.5 * z], axis=1)
    peak = total_nmgy / (2 * np.pi * sigma_pix**2)
    image = peak[:, None, None, None] * colour[:, :, None, None] * profile[:, None]
    image += rng.normal(0.0, 0.003, size=(n, 3, IMAGE_SIZE_PIX, IMAGE_SIZE_PIX))
    return image.astype(np.float32)


def _spectra(
    z: np.ndarray, a: np.ndarray, s: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # flux, ivar (N, 7781) float32 and mask (N, 7781) uint8
    wave = WAVELENGTH[None, :]  # (1, L)
    slope = (1.0 + 3.0 * z)[:, None]
    flux = (1.0 + 4.0 * s)[:, None] + slope * (wave - 3600.0) / 6224.0
    for rest in LINES_ANGSTROM:
        centre = rest * (1.0 + z)[:, None]
        flux = flux + (1.0 + 12.0 * a)[:, None] * np.exp(-0.5 * ((wave - centre) / 4.0) ** 2)
    sigma = 0.3
    flux = flux + rng.normal(0.0, sigma, size=flux.shape)
    ivar = np.full(flux.shape, 1.0 / sigma**2)
    mask = (rng.random(flux.shape) < 0.01).astype(np.uint8)
    ivar[mask == 1] = 0.0
    return flux.astype(np.float32), ivar.astype(np.float32), mask


def make_pairs_table(n: int, seed: int = 0, pixel: int = 1000) -> pa.Table:
    """A PAIRS_SCHEMA table of ``n`` synthetic galaxies (targetids seed-dependent, unique)."""
    rng = np.random.default_rng(seed)
    targetid = (np.int64(seed) << np.int64(32)) + np.arange(n, dtype=np.int64) + 39627000000000
    z = rng.uniform(0.05, 0.6, n)
    active = rng.uniform(0.0, 1.0, n)
    size = rng.uniform(0.0, 1.0, n)
    image = _images(z, active, size, rng)
    flux, ivar, mask = _spectra(z, active, size, rng)
    ra = rng.uniform(150.0, 151.0, n)
    dec = rng.uniform(2.0, 3.0, n)
    phot = image.sum(axis=(2, 3)).astype(np.float32)  # (N, 3) nanomaggies
    columns = {
        "targetid": pa.array(targetid),
        "healpix": pa.array(np.full(n, pixel, dtype=np.int32)),
        "ra": pa.array(ra),
        "dec": pa.array(dec),
        "target_ra": pa.array(ra),
        "target_dec": pa.array(dec),
        "sep_arcsec": pa.array(np.zeros(n, dtype=np.float32)),
        "z": pa.array(z),
        "zerr": pa.array(np.full(n, 1e-4)),
        "survey": pa.array(["sv3"] * n),
        "program": pa.array(["bright"] * n),
        "ls_release": pa.array(np.full(n, 9010, dtype=np.int16)),
        "brickid": pa.array(np.full(n, 1, dtype=np.int32)),
        "objid": pa.array(np.arange(n, dtype=np.int32)),
        "flux_g": pa.array(phot[:, 0]),
        "flux_r": pa.array(phot[:, 1]),
        "flux_z": pa.array(phot[:, 2]),
        "ebv": pa.array(np.full(n, 0.02, dtype=np.float32)),
        "morphtype": pa.array(["EXP"] * n),
        "image": encode_blob("image", image),
        "flux": encode_blob("flux", flux),
        "ivar": encode_blob("ivar", ivar),
        "mask": encode_blob("mask", mask),
        "split": pa.array(list(split_of(targetid))),
    }
    return pa.Table.from_pydict(columns, schema=PAIRS_SCHEMA)


def write_pairs_dir(
    root: Path,
    n_per_pixel: int,
    pixels: tuple[int, ...] = (1000,),
    seed: int = 0,
    row_group_rows: int | None = None,
) -> list[str]:
    """Write ``pairs/<release>``-style hive folders under ``root``; return the file paths.

    Each file is one row group unless ``row_group_rows`` is given.
    """
    paths = []
    for i, pixel in enumerate(pixels):
        path = Path(partition_file(str(root), pixel))
        path.parent.mkdir(parents=True, exist_ok=True)
        table = make_pairs_table(n_per_pixel, seed=seed + i, pixel=pixel)
        pq.write_table(table, path, row_group_size=row_group_rows)
        paths.append(str(path))
    return paths


def micro_model_config() -> ModelConfig:
    """A very small model of the same family, for fast loop tests (not a preset)."""
    return ModelConfig(
        image=ImageEncoderConfig(width=32, depth=1, n_heads=2, bin_factor=4),  # 36 px, 9 tokens
        spectrum=SpectrumEncoderConfig(width=32, depth=1, n_heads=2, slice_pix=240, stride_pix=120),
        head=HeadConfig(embed_dim=32, n_heads=2),
        loss=LossConfig(learnable=True, init_logit_scale=10.0),
    )
