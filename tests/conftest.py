"""Fixtures shared by the tests that talk to the loopback fake Hugging Face Hub (fake_hub.py)."""

from __future__ import annotations

import secrets

import huggingface_hub
import pytest
from huggingface_hub.utils import _detect_agent


@pytest.fixture
def token() -> str:
    """A fresh Hub token: each test can then look for it in files, logs and metadata."""
    return f"hf_{secrets.token_hex(16)}"


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo any offline mode the environment or another test set: the fake Hub is on loopback."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # huggingface_hub's progress display fetches an agent registry from huggingface.co itself
    # (best effort, 3 s timeout); an empty registry keeps the test on loopback.
    monkeypatch.setattr(_detect_agent, "_registry", _detect_agent._EMPTY_REGISTRY)
