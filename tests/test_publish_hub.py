"""push_to_hub: skipped without settings, uploads to a loopback fake Hub, never leaks the token."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import fsspec
import pytest
from fake_hub import FakeHub
from pairs_factory import write_pairs

from astroclip_core.publish import hub
from astroclip_core.publish.dataset import build_hf_dataset
from astroclip_core.publish.hub import (
    HubPushError,
    HubSettings,
    PushResult,
    hub_settings_from_env,
    push_to_hub,
)
from astroclip_core.releases import Release
from astroclip_core.storage import StorageLayout

RELEASE = "edr"
EDR = Release(RELEASE, "fuji")
REPO_ID = "astroclip-test/pairs-edr"


def _build(root: str, rows_per_shard: int, write: bool = True) -> str:
    layout = StorageLayout(root)
    if write:
        write_pairs(root, RELEASE, {3: 5, 6: 4})
    out = layout.hf_dir(RELEASE)
    build_hf_dataset(layout.pairs_dir(RELEASE), out, EDR, rows_per_shard=rows_per_shard)
    return out


def _local_files(folder: str) -> dict[str, bytes]:
    root = Path(folder)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_settings_come_from_the_environment_and_hide_the_token(token: str) -> None:
    assert hub_settings_from_env({}) is None
    assert hub_settings_from_env({"HF_REPO_ID": REPO_ID}) is None
    assert hub_settings_from_env({"HF_TOKEN": token, "HF_REPO_ID": " "}) is None
    settings = hub_settings_from_env(
        {"HF_REPO_ID": REPO_ID, "HF_TOKEN": token, "HF_ENDPOINT": "http://127.0.0.1:9"}
    )
    assert settings == HubSettings(repo_id=REPO_ID, token=token, endpoint="http://127.0.0.1:9")
    assert token not in repr(settings) and token not in str(settings)


def test_push_is_skipped_without_repo_or_token(
    tmp_path, token: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class NoNetwork:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("push_to_hub contacted the Hub without settings")

    monkeypatch.setattr(hub, "HfApi", NoNetwork)
    monkeypatch.delenv("HF_REPO_ID", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    caplog.set_level(logging.INFO)
    settings = hub_settings_from_env()
    assert settings is None
    result = push_to_hub(str(tmp_path))
    assert result.pushed is False
    assert "HF_REPO_ID" in result.reason and "HF_TOKEN" in result.reason
    assert result.reason in caplog.text
    only_token = push_to_hub(str(tmp_path), repo_id=None, token=token)
    assert only_token.pushed is False and "HF_REPO_ID" in only_token.reason
    assert "HF_TOKEN" not in only_token.reason and token not in repr(only_token)
    only_repo = push_to_hub(str(tmp_path), repo_id=REPO_ID)
    assert "HF_TOKEN" in only_repo.reason and "HF_REPO_ID" not in only_repo.reason


def test_push_uploads_every_file_and_replaces_stale_shards(
    tmp_path,
    token: str,
    online: None,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    out = _build(str(tmp_path), rows_per_shard=2)
    with FakeHub(token) as fake:
        first = push_to_hub(out, repo_id=REPO_ID, token=token, endpoint=fake.endpoint)
        assert fake.repos[REPO_ID] == _local_files(out)
        assert first.pushed and first.n_files == len(_local_files(out))
        assert first.commit_oid == fake.commits[-1]

        out = _build(str(tmp_path), rows_per_shard=50, write=False)  # fewer shards, new names
        second = push_to_hub(out, repo_id=REPO_ID, token=token, endpoint=fake.endpoint)
        assert fake.repos[REPO_ID] == _local_files(out)  # stale shards deleted, none duplicated
        assert second.n_bytes == sum(len(b) for b in _local_files(out).values())

        assert fake.requests, "the fake Hub saw no traffic"
        assert {r.authorization for r in fake.requests} == {f"Bearer {token}"}
        paths = {r.path for r in fake.requests}
        assert "/api/repos/create" in paths
        assert any(p.startswith(f"/api/datasets/{REPO_ID}/commit/") for p in paths)

    captured = capsys.readouterr()
    for text in (caplog.text, captured.out, captured.err, repr(first), repr(second), str(second)):
        assert token not in text
    assert isinstance(second, PushResult) and second.repo_id == REPO_ID
    assert "pushing" in caplog.text


def test_push_from_an_fsspec_url(token: str, online: None) -> None:
    root = f"memory://hub-push-{secrets.token_hex(4)}"
    out = _build(root, rows_per_shard=3)
    fs, path = fsspec.core.url_to_fs(out)
    expected = {p.removeprefix(path + "/"): fs.cat_file(p) for p in fs.find(path)}
    with FakeHub(token) as fake:
        result = push_to_hub(out, repo_id=REPO_ID, token=token, endpoint=fake.endpoint)
        assert fake.repos[REPO_ID] == expected
    assert result.pushed and result.n_files == len(expected)
    fs.rm(root.removeprefix("memory://"), recursive=True)


def test_push_of_a_folder_that_is_not_a_dataset_fails(tmp_path, token: str, online: None) -> None:
    with FakeHub(token) as fake:
        with pytest.raises(FileNotFoundError, match="is not a built dataset"):
            push_to_hub(str(tmp_path), repo_id=REPO_ID, token=token, endpoint=fake.endpoint)
        assert fake.requests == []


def test_fake_hub_rejects_a_wrong_token(tmp_path, token: str, online: None) -> None:
    out = _build(str(tmp_path), rows_per_shard=50)
    with FakeHub(token) as fake:
        with pytest.raises(HubPushError) as failed:
            push_to_hub(out, repo_id=REPO_ID, token="hf_wrong", endpoint=fake.endpoint)
        assert REPO_ID not in fake.repos
    # One message naming the repo, the Hub and the endpoint, never the token.
    message = str(failed.value)
    assert REPO_ID in message and fake.endpoint in message and "Hugging Face Hub" in message
    assert "HfHubHTTPError" in message and "hf_wrong" not in message


def test_unreachable_hub_names_the_endpoint(tmp_path, online: None) -> None:
    import socket

    out = _build(str(tmp_path), rows_per_shard=50)
    with socket.socket() as sock:  # a port nothing listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with pytest.raises(HubPushError) as failed:
            push_to_hub(out, repo_id=REPO_ID, token="hf_secret_value", endpoint=endpoint)
    message = str(failed.value)
    assert f"Hugging Face Hub at {endpoint}" in message and REPO_ID in message, message
    assert "hf_secret_value" not in message
