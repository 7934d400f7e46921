"""Embeddings of pairs with a trained model (no augmentation): what the embeddings asset calls.

``embed_pairs(model, pairs, batch_size, device)`` takes a pairs table (PAIRS_SCHEMA columns,
any split) or already decoded :class:`PairArrays`, centre-crops the images, and returns the
L2-normalised image and spectrum embeddings as two float32 numpy arrays of shape (N, D), row i
belonging to row i of the input.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from astroclip_core.model.clip import AstroClipModel
from astroclip_core.tables.pairs import PairArrays, decode_pairs
from astroclip_core.training.augment import eval_inputs


@torch.no_grad()
def embed_pairs(
    model: AstroClipModel,
    pairs: pa.Table | PairArrays,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """(image_emb (N, D), spectrum_emb (N, D)), float32, unit-norm rows."""
    arrays = decode_pairs(pairs) if isinstance(pairs, pa.Table) else pairs
    was_training = model.training
    model.eval()
    crop = model.config.image.crop_pix
    d = model.config.head.embed_dim
    image_emb = np.empty((len(arrays), d), dtype=np.float32)
    spectrum_emb = np.empty((len(arrays), d), dtype=np.float32)
    try:
        for start in range(0, len(arrays), batch_size):
            rows = np.arange(start, min(start + batch_size, len(arrays)))
            inputs = eval_inputs(arrays.take(rows), crop).to(device)
            image_emb[rows] = model.encode_image(inputs.image_nmgy).cpu().numpy()
            spectrum_emb[rows] = (
                model.encode_spectrum(inputs.flux, inputs.valid, inputs.ivar).cpu().numpy()
            )
    finally:
        model.train(was_training)
    return image_emb, spectrum_emb
