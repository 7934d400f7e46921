"""Push a trained model folder to a Hugging Face Hub model repo, only when a repo id and token
are given.

Settings come from the environment at the orchestration edge: ``HF_MODEL_REPO_ID`` (the model
repo; the dataset's is ``HF_REPO_ID``), ``HF_TOKEN`` and optionally ``HF_ENDPOINT``. As for
the dataset push (:mod:`astroclip_core.publish.hub`), the token is never logged, never part of
a repr or a result, and never written to a file: the folder's files (weights, ``config.json``,
the card, the history and loss curve) are made from the training config and the evaluation
report alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from huggingface_hub import HfApi

from astroclip_core.fsio import filesystem, is_local, scratch_dir
from astroclip_core.model.pretrained import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
from astroclip_core.publish.hub import (
    TOKEN_ENV,
    HubPushError,
    HubSettings,
    PushResult,
    hub_settings_from_env,
)
from astroclip_core.storage import StorageLayout

logger = logging.getLogger(__name__)

MODEL_REPO_ID_ENV = "HF_MODEL_REPO_ID"
# What a model repo gets: the card, the config and the weights (required), and the training
# history and loss curve when the folder has them.
REQUIRED_FILES = (CARD_NAME, CONFIG_NAME, WEIGHTS_NAME)
OPTIONAL_FILES = ("history.parquet", "loss_curve.png")


def model_hub_settings_from_env(environ: Mapping[str, str] | None = None) -> HubSettings | None:
    """HubSettings from HF_MODEL_REPO_ID, HF_TOKEN and optional HF_ENDPOINT; None unless both
    the repo id and the token are set."""
    return hub_settings_from_env(environ, repo_id_env=MODEL_REPO_ID_ENV)


def _skip_reason() -> str:
    return f"model push to the Hub skipped: {MODEL_REPO_ID_ENV} and {TOKEN_ENV} are not both set"


def _local_files(folder: Path, names: Sequence[str]) -> list[Path]:
    missing = [n for n in names if n in REQUIRED_FILES and not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a model folder: it lacks {missing}")
    return [folder / n for n in names if (folder / n).is_file()]


def push_model_folder(
    folder: str, settings: HubSettings | None, only: Sequence[str] | None = None
) -> PushResult:
    """Upload the model folder ``folder`` (local or fsspec URL) to the model repo of
    ``settings``; skipped (``pushed=False`` with the reason) when ``settings`` is None.

    ``only`` restricts the upload to those file names (the evaluation step re-pushes just the
    card); by default the :data:`REQUIRED_FILES` and whichever :data:`OPTIONAL_FILES` exist
    are committed in one commit, the repo being created if needed.
    """
    if settings is None:
        reason = _skip_reason()
        logger.info(reason)
        return PushResult(pushed=False, reason=reason)
    names = tuple(only) if only else (*REQUIRED_FILES, *OPTIONAL_FILES)
    if is_local(folder):
        return _push(Path(folder.removeprefix("file://")), names, settings)
    with scratch_dir("hf-model-push") as tmp:
        fs, root = filesystem(folder)
        for name in names:
            if fs.exists(f"{root.rstrip('/')}/{name}"):
                fs.get(f"{root.rstrip('/')}/{name}", f"{tmp}/{name}")
        return _push(Path(tmp), names, settings)


def _push(folder: Path, names: Sequence[str], settings: HubSettings) -> PushResult:
    files = _local_files(folder, names)
    n_bytes = sum(f.stat().st_size for f in files)
    api = HfApi(endpoint=settings.endpoint, token=settings.token)
    logger.info(
        "pushing %d model files (%d bytes) to model repo %s", len(files), n_bytes, settings.repo_id
    )
    try:
        api.create_repo(settings.repo_id, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=settings.repo_id,
            folder_path=folder,
            repo_type="model",
            allow_patterns=[f.name for f in files],
            commit_message=f"Upload model ({', '.join(f.name for f in files)})",
        )
    except Exception as err:
        # Same as the dataset push: one message naming repo and endpoint, the token masked,
        # the cause not chained so that no traceback carries a request with the token.
        detail = f"{type(err).__name__}: {err}".replace(settings.token, "***")
        raise HubPushError(
            f"pushing model repo {settings.repo_id!r} to the Hugging Face Hub at "
            f"{api.endpoint} failed: {detail}"
        ) from None
    logger.info("pushed model repo %s: commit %s", settings.repo_id, commit.oid)
    return PushResult(
        pushed=True,
        reason="pushed",
        repo_id=settings.repo_id,
        endpoint=api.endpoint,
        commit_url=str(commit.commit_url),
        commit_oid=str(commit.oid),
        n_files=len(files),
        n_bytes=n_bytes,
    )


def push_release_model(
    layout: StorageLayout,
    release: str,
    model: str,
    settings: HubSettings | None,
    only: Sequence[str] | None = None,
) -> tuple[PushResult, dict[str, object]]:
    """Push the release's published model ``model`` (``models/<release>/<model>/``) as
    :func:`push_model_folder` does; return the result and its step metadata (``model_pushed``,
    ``model_push_detail``, ``model_repo_id``, ``model_commit_url``: no token)."""
    push = push_model_folder(layout.model_dir(release, model), settings, only)
    metadata: dict[str, object] = {
        "model_pushed": push.pushed,
        "model_push_detail": push.reason,
        "model_repo_id": push.repo_id or "",
        "model_commit_url": push.commit_url or "",
    }
    return push, metadata
