"""Push a built dataset folder to the Hugging Face Hub, only when a repo id and token are given.

Settings come from the environment at the orchestration edge (``HF_REPO_ID``, ``HF_TOKEN``,
optionally ``HF_ENDPOINT``). The token is a secret: it is never logged, never part of a repr
and never returned; it travels only in the ``Authorization`` header that huggingface_hub sends.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi

from astroclip_core.fsio import filesystem, is_local, scratch_dir
from astroclip_core.publish.info import CARD_NAME, DATA_FOLDER

logger = logging.getLogger(__name__)

REPO_ID_ENV = "HF_REPO_ID"
TOKEN_ENV = "HF_TOKEN"
ENDPOINT_ENV = "HF_ENDPOINT"
UPLOAD_PATTERNS = (CARD_NAME, f"{DATA_FOLDER}/*.parquet")


@dataclass(frozen=True)
class HubSettings:
    """Where to push: a dataset repo id, the write token (hidden from repr) and the Hub endpoint."""

    repo_id: str
    token: str = field(repr=False)
    endpoint: str | None = None


@dataclass(frozen=True)
class PushResult:
    """Outcome of :func:`push_to_hub`; ``pushed`` is False with a ``reason`` when skipped."""

    pushed: bool
    reason: str
    repo_id: str | None = None
    endpoint: str | None = None
    commit_url: str | None = None
    commit_oid: str | None = None
    n_files: int = 0
    n_bytes: int = 0


def hub_settings_from_env(
    environ: Mapping[str, str] | None = None, repo_id_env: str = REPO_ID_ENV
) -> HubSettings | None:
    """HubSettings from ``repo_id_env`` (default HF_REPO_ID), HF_TOKEN and optional HF_ENDPOINT;
    None unless both the repo id and the token are set."""
    env = os.environ if environ is None else environ
    repo_id = env.get(repo_id_env, "").strip()
    token = env.get(TOKEN_ENV, "").strip()
    if not repo_id or not token:
        return None
    return HubSettings(repo_id=repo_id, token=token, endpoint=env.get(ENDPOINT_ENV) or None)


def _skip_reason(repo_id: str | None, token: str | None) -> str:
    missing = [name for name, value in ((REPO_ID_ENV, repo_id), (TOKEN_ENV, token)) if not value]
    return f"push to the Hub skipped: no {' and no '.join(missing)} configured"


def _local_dataset_files(folder: Path) -> list[Path]:
    """The card and shards of a built dataset folder; raise when it is not one."""
    card = folder / CARD_NAME
    shards = sorted((folder / DATA_FOLDER).glob("*.parquet"))
    if not card.is_file() or not shards:
        raise FileNotFoundError(
            f"{folder} is not a built dataset: needs {CARD_NAME} and {DATA_FOLDER}/*.parquet"
        )
    return [card, *shards]


class HubPushError(RuntimeError):
    """A push to the Hub failed; the message names the repo and the endpoint, never the token."""


def push_to_hub(
    out_dir: str,
    repo_id: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> PushResult:
    """Upload the dataset folder ``out_dir`` (local or fsspec URL) to the dataset repo ``repo_id``.

    Without a repo id or token nothing is contacted and the result says why it was skipped.
    Otherwise the repo is created if needed (``exist_ok``) and the card and shards are
    committed; shards in the repo that this build did not write are deleted in the same
    commit, so re-pushing a rebuilt dataset never leaves stale shards behind.
    """
    if not repo_id or not token:
        reason = _skip_reason(repo_id, token)
        logger.info(reason)
        return PushResult(pushed=False, reason=reason, repo_id=repo_id, endpoint=endpoint)
    if is_local(out_dir):
        return _push_folder(Path(out_dir.removeprefix("file://")), repo_id, token, endpoint)
    with scratch_dir("hf-push") as tmp:
        fs, root = filesystem(out_dir)
        root = root.rstrip("/")
        fs.get(f"{root}/{CARD_NAME}", f"{tmp}/{CARD_NAME}")
        (Path(tmp) / DATA_FOLDER).mkdir()
        for path in fs.glob(f"{root}/{DATA_FOLDER}/*.parquet"):
            fs.get(path, f"{tmp}/{DATA_FOLDER}/{path.rsplit('/', 1)[-1]}")
        return _push_folder(Path(tmp), repo_id, token, endpoint)


def _push_folder(folder: Path, repo_id: str, token: str, endpoint: str | None) -> PushResult:
    files = _local_dataset_files(folder)
    n_bytes = sum(f.stat().st_size for f in files)
    api = HfApi(endpoint=endpoint, token=token)
    logger.info("pushing %d files (%d bytes) to dataset repo %s", len(files), n_bytes, repo_id)
    try:
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="dataset",
            allow_patterns=list(UPLOAD_PATTERNS),
            delete_patterns=[f"{DATA_FOLDER}/*.parquet"],
            commit_message=f"Upload dataset ({len(files) - 1} shards)",
        )
    except Exception as err:
        # huggingface_hub's connection errors name neither the Hub nor the endpoint. The cause
        # is not chained (from None) so that no traceback can carry a request with the token.
        detail = f"{type(err).__name__}: {err}".replace(token, "***")
        raise HubPushError(
            f"pushing dataset repo {repo_id!r} to the Hugging Face Hub at {api.endpoint} "
            f"failed: {detail}"
        ) from None
    logger.info("pushed %s: commit %s", repo_id, commit.oid)
    return PushResult(
        pushed=True,
        reason="pushed",
        repo_id=repo_id,
        endpoint=api.endpoint,
        commit_url=str(commit.commit_url),
        commit_oid=str(commit.oid),
        n_files=len(files),
        n_bytes=n_bytes,
    )
