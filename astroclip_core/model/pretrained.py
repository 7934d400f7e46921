"""Trained models as shareable folders: ``model.safetensors`` + ``config.json`` (+ a card).

A model folder (local path, fsspec URL or Hugging Face Hub model repo) holds:

- ``model.safetensors``: the state dict, float tensors as trained (no pickled code, so loading
  a folder someone else made runs nothing of theirs);
- ``config.json``: ``{"format": "astroclip-model", "format_version": 1, "model_config": ...,
  "training": ..., ...}``, the model's :class:`ModelConfig` (enough to rebuild it) and the
  training config it came from (``null`` for a model saved outside training) plus free
  fields such as ``steps`` and ``release``;
- ``README.md``: the model card (written by :mod:`astroclip_core.publish.model_card`; not
  needed to load).

:func:`load_pretrained` takes a folder, a ``model.safetensors`` file, an old ``model.pt``
(the format before this one: a torch-pickled dict of weights and config, still loaded), the
folder holding such a ``model.pt``, or a Hub repo id ``owner/name`` (downloaded into the
Hugging Face cache; ``HF_TOKEN`` and ``HF_ENDPOINT`` are read from the environment when not
given, as huggingface_hub does). The token is only handed to huggingface_hub, never logged.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from astroclip_core import fsio
from astroclip_core.errors import FormatError
from astroclip_core.model.config import ModelConfig

if TYPE_CHECKING:
    from astroclip_core.model.clip import AstroClipModel

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
LEGACY_WEIGHTS_NAME = "model.pt"
CONFIG_FORMAT = "astroclip-model"
CONFIG_FORMAT_VERSION = 1
# A Hub repo id: "owner/name" (letters, digits, -, _, .), optionally "@revision".
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def model_folder_config(
    model: AstroClipModel, training: dict | None = None, extra: dict | None = None
) -> dict:
    """The ``config.json`` object of ``model``: its ModelConfig, the training config and
    ``extra`` fields (JSON-able; never put secrets here, the file is published)."""
    return {
        "format": CONFIG_FORMAT,
        "format_version": CONFIG_FORMAT_VERSION,
        **(extra or {}),
        "model_config": model.config.to_dict(),
        "training": training,
    }


def save_pretrained(
    model: AstroClipModel,
    folder: str,
    training: dict | None = None,
    extra: dict | None = None,
) -> dict[str, str]:
    """Write ``model.safetensors`` and ``config.json`` into ``folder`` (path or fsspec URL).

    Each file is written atomically (temporary name, then rename); the weights go last, so a
    reader that finds them also finds their config. Returns name -> URL of the files written.
    """
    from safetensors.torch import save

    folder = str(folder).rstrip("/")
    config = model_folder_config(model, training, extra)
    # safetensors refuses tensors that share memory; contiguous CPU copies never do.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    config_url, weights_url = f"{folder}/{CONFIG_NAME}", f"{folder}/{WEIGHTS_NAME}"
    fsio.atomic_write_bytes(config_url, json.dumps(config, indent=2).encode())
    metadata = {"format": "pt", "astroclip_format_version": str(CONFIG_FORMAT_VERSION)}
    fsio.atomic_write_bytes(weights_url, save(state, metadata=metadata))
    return {CONFIG_NAME: config_url, WEIGHTS_NAME: weights_url}


def read_model_config(folder: str) -> dict:
    """The ``config.json`` object of a model folder; FormatError naming the file when it is
    missing keys or not this format."""
    url = f"{str(folder).rstrip('/')}/{CONFIG_NAME}"
    try:
        data = json.loads(fsio.read_bytes(url))
    except FileNotFoundError:
        raise FileNotFoundError(f"{url} does not exist: not a model folder") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FormatError(url, f"not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != CONFIG_FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise FormatError(url, f"format is {got!r}, not {CONFIG_FORMAT!r}: not a model config")
    if data.get("format_version") != CONFIG_FORMAT_VERSION:
        raise FormatError(
            url,
            f"format_version {data.get('format_version')!r} is not {CONFIG_FORMAT_VERSION}",
        )
    if not isinstance(data.get("model_config"), dict):
        raise FormatError(url, "has no 'model_config' object")
    return data


def _load_folder(folder: str, device: str | torch.device) -> AstroClipModel:
    from safetensors import SafetensorError
    from safetensors.torch import load

    from astroclip_core.model.clip import AstroClipModel

    data = read_model_config(folder)
    weights = f"{folder.rstrip('/')}/{WEIGHTS_NAME}"
    try:
        config = ModelConfig.from_dict(data["model_config"])
    except (TypeError, ValueError, KeyError) as err:
        raise FormatError(f"{folder}/{CONFIG_NAME}", f"bad model_config: {err}") from None
    try:
        state = load(fsio.read_bytes(weights))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{weights} does not exist: the model folder has no weights"
        ) from None
    except SafetensorError as err:
        raise FormatError(weights, f"not a readable safetensors file ({err})") from None
    model = AstroClipModel(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        problem = " ".join(str(err).split())[:300]
        raise FormatError(weights, f"weights do not fit the config's model: {problem}") from None
    return model.to(device).eval()


def is_hub_id(source: str) -> bool:
    """True when ``source`` reads as a Hub repo id ``owner/name[@revision]`` and is not an
    existing local path."""
    return bool(_HUB_ID.match(source)) and not Path(source).exists()


def download_pretrained(
    repo_id: str,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | None = None,
) -> str:
    """Download a Hub model repo's ``config.json`` and ``model.safetensors``; return the local
    snapshot folder. ``token``/``endpoint`` default to ``HF_TOKEN``/``HF_ENDPOINT``."""
    from huggingface_hub import hf_hub_download

    if "@" in repo_id and revision is None:
        repo_id, revision = repo_id.split("@", 1)
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    token = token or os.environ.get("HF_TOKEN") or None
    paths = []
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            paths.append(
                hf_hub_download(
                    repo_id,
                    name,
                    revision=revision,
                    token=token,
                    endpoint=endpoint,
                    cache_dir=cache_dir,
                )
            )
        except Exception as err:
            # huggingface_hub's errors name the URL; make sure they never carry the token.
            detail = f"{type(err).__name__}: {err}"
            if token:
                detail = detail.replace(token, "***")
            raise FileNotFoundError(
                f"cannot download {name} of Hub model repo {repo_id!r} "
                f"from {endpoint or 'huggingface.co'}: {' '.join(detail.split())[:400]}"
            ) from None
    return str(Path(paths[0]).parent)


def load_pretrained(
    source: str | os.PathLike,
    device: str | torch.device = "cpu",
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | None = None,
) -> AstroClipModel:
    """The model at ``source`` in eval mode on ``device`` (see the module docstring for what
    ``source`` may be). Raises FileNotFoundError when it is none of those, FormatError naming
    the file when a file is not what it should be."""
    source = str(source)
    if source.endswith(".pt"):
        from astroclip_core.training.checkpoint import load_model_pt

        return load_model_pt(source, device)
    if source.endswith("/" + WEIGHTS_NAME) or source == WEIGHTS_NAME:
        source = source[: -len(WEIGHTS_NAME)].rstrip("/") or "."
    if fsio.exists(source):
        if fsio.exists(f"{source.rstrip('/')}/{CONFIG_NAME}") and fsio.exists(
            f"{source.rstrip('/')}/{WEIGHTS_NAME}"
        ):
            return _load_folder(source, device)
        legacy = f"{source.rstrip('/')}/{LEGACY_WEIGHTS_NAME}"
        if fsio.exists(legacy):
            from astroclip_core.training.checkpoint import load_model_pt

            return load_model_pt(legacy, device)
        raise FileNotFoundError(
            f"{source} is not a model folder: it holds neither {WEIGHTS_NAME} + {CONFIG_NAME} "
            f"nor {LEGACY_WEIGHTS_NAME}"
        )
    if is_hub_id(source):
        folder = download_pretrained(source, revision, token, endpoint, cache_dir)
        return _load_folder(folder, device)
    raise FileNotFoundError(
        f"{source!r} is neither a model folder, a {WEIGHTS_NAME} or {LEGACY_WEIGHTS_NAME} file, "
        "nor a Hugging Face Hub repo id (owner/name)"
    )


def model_label(source: str | os.PathLike) -> str:
    """A short name for a model source: the folder's name (the folder above a weights file),
    or the Hub repo id."""
    text = str(source).rstrip("/")
    if text.endswith((f"/{WEIGHTS_NAME}", f"/{LEGACY_WEIGHTS_NAME}")):
        text = text.rsplit("/", 1)[0]
    if is_hub_id(text):
        return text
    return text.rsplit("/", 1)[-1] or text
