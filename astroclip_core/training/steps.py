"""Release-level training steps the orchestration calls: train, point at the model, embed."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from astroclip_core import fsio
from astroclip_core.storage import StorageLayout
from astroclip_core.tables.embeddings import embeddings_table, write_embeddings
from astroclip_core.tables.pairs import read_pairs
from astroclip_core.training.checkpoint import load_model
from astroclip_core.training.config import TrainConfig, TrainResult
from astroclip_core.training.embed import embed_pairs
from astroclip_core.training.train import main as train_main


@dataclass(frozen=True)
class ModelRef:
    """Which trained model a release's embeddings and evaluation use."""

    release: str
    name: str  # "<preset>-<run>"
    model_path: str


def train_release(
    layout: StorageLayout, release: str, preset: str, run: str, fresh: bool, **train_kwargs: object
) -> tuple[TrainResult, ModelRef]:
    """Train ``preset`` on the release's pairs into ``models/<release>/<preset>-<run>/``.

    An interrupted run resumes from its checkpoint; ``fresh`` deletes the folder first. On
    success the release's ``current.json`` points at the new model.
    """
    name = f"{preset}-{run}"
    out_dir = layout.model_dir(release, name)
    if fresh and fsio.exists(out_dir):
        fs, path = fsio.filesystem(out_dir)
        fs.rm(path, recursive=True)
    config = TrainConfig(
        out_dir=out_dir, model=preset, pairs_dir=layout.pairs_dir(release), **train_kwargs
    )
    result = train_main(config)
    ref = ModelRef(release, name, result.paths["model"])
    fsio.atomic_write_bytes(
        layout.current_model(release),
        json.dumps({"model": name, "model_path": ref.model_path}).encode(),
    )
    return result, ref


def current_model(layout: StorageLayout, release: str) -> ModelRef:
    """The model the release's ``current.json`` names (raises when none was trained)."""
    url = layout.current_model(release)
    if not fsio.exists(url):
        raise FileNotFoundError(
            f"{url} does not exist: train a model for release {release!r} first"
        )
    data = json.loads(fsio.read_bytes(url))
    return ModelRef(release, data["model"], data["model_path"])


def embed_partition(
    layout: StorageLayout, release: str, pixel: int, batch_size: int = 128, device: str = "cpu"
) -> tuple[str, int, int]:
    """Embed every pair of one partition with the current model; (url, rows, bytes)."""
    ref = current_model(layout, release)
    model = load_model(ref.model_path, device=device)
    pairs = read_pairs(layout.pairs_file(release, pixel))
    image_emb, spectrum_emb = embed_pairs(model, pairs, batch_size=batch_size, device=device)
    if not (np.isfinite(image_emb).all() and np.isfinite(spectrum_emb).all()):
        raise ValueError(f"model {ref.name} produced non-finite embeddings for {release}-{pixel}")
    table = embeddings_table(pairs, image_emb, spectrum_emb, ref.name)
    url, size = write_embeddings(layout, release, ref.name, pixel, table)
    return url, table.num_rows, size
