"""The pair images the supervised CNN baseline learns from, centre-cropped as they are read.

The full (3, 152, 152) float32 cutouts are 277 kB per galaxy; only the centre crop the CNN
sees is kept, so a few thousand galaxies take tens of MB instead of about a GB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from astroclip_core import fsio
from astroclip_core.tables.pairs import PAIRS_ROW_GROUP_SIZE, list_pairs_files
from astroclip_core.tables.schemas import decode_blob


@dataclass(frozen=True, eq=False)
class GalaxyImages:
    """g,r,z images of some galaxies; row i of both arrays is one galaxy."""

    targetid: np.ndarray  # (N,) int64
    image_nmgy: np.ndarray  # (N, 3, S, S) float32 nanomaggies, bands g, r, z

    def __post_init__(self) -> None:
        if self.image_nmgy.ndim != 4 or self.image_nmgy.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, S, S), got {self.image_nmgy.shape}")
        if len(self.targetid) != len(self.image_nmgy):
            raise ValueError(f"{len(self.targetid)} targetids but {len(self.image_nmgy)} images")

    def aligned(self, targetid: np.ndarray) -> np.ndarray:
        """The images (len(targetid), 3, S, S) in the order of ``targetid``.

        Raises ValueError when a targetid has no image or an image's targetid repeats.
        """
        order = np.argsort(self.targetid, kind="stable")
        ids = self.targetid[order]
        if (ids[1:] == ids[:-1]).any():
            raise ValueError("images hold a targetid more than once")
        pos = np.searchsorted(ids, targetid)
        found = (pos < len(ids)) & (ids[np.minimum(pos, len(ids) - 1)] == targetid)
        if not found.all():
            raise ValueError(
                f"no image for {int((~found).sum())} of {len(targetid)} targetids "
                f"(first {int(targetid[~found][0])})"
            )
        return self.image_nmgy[order[pos]]


def _centre_crop(image: np.ndarray, crop_pix: int) -> np.ndarray:
    """(N, C, H, W) -> (N, C, crop, crop) view of the central square (the model's crop)."""
    h, w = image.shape[-2:]
    if not 0 < crop_pix <= min(h, w):
        raise ValueError(f"crop of {crop_pix} px does not fit images of {h}x{w} px")
    top, left = (h - crop_pix) // 2, (w - crop_pix) // 2
    return image[..., top : top + crop_pix, left : left + crop_pix]


def read_centre_crops(pairs_dir: str, crop_pix: int) -> GalaxyImages:
    """The ``crop_pix`` centre crops of every pair image under ``pairs_dir`` (pixel order).

    Reads one row group at a time (:data:`PAIRS_ROW_GROUP_SIZE` rows, ~70 MB of images).
    """
    ids: list[np.ndarray] = []
    crops: list[np.ndarray] = []
    for _, url in list_pairs_files(pairs_dir):
        for batch in fsio.iter_parquet_batches(url, PAIRS_ROW_GROUP_SIZE, ["targetid", "image"]):
            table = pa.Table.from_batches([batch])
            image = decode_blob("image", table.column("image"))  # (B, 3, 152, 152) view
            crops.append(np.ascontiguousarray(_centre_crop(image, crop_pix)))  # a copy
            ids.append(table.column("targetid").to_numpy().astype(np.int64))
    return GalaxyImages(np.concatenate(ids), np.concatenate(crops))
