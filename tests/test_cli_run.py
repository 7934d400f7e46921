"""``astroclip run`` as a user runs it: bad options refused up front, killed training resumed."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from astroclip_core.cli import main

ASTROCLIP = str(Path(sys.executable).parent / "astroclip")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--steps", "-5"], "steps must be in 1..10000000, got -5"),
        (["--steps", "0"], "steps must be in 1..10000000, got 0"),
        (["--steps", "1" * 20], "steps must be in 1..10000000"),
        (["--preset", "nosuch"], "unknown model preset 'nosuch'"),
        (["--seed", "-1"], "seed must be in 0..4294967295, got -1"),
        (["--batch-size", "0"], "batch_size must be >= 1, got 0"),
        (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        (["--nproc", "0"], "nproc must be >= 1, got 0"),
        (["--train-source", "s3"], "argument --train-source: invalid choice: 's3'"),
        (["--executor", "spark"], "argument --executor: invalid choice: 'spark'"),
        (["--sky-scale", "0"], "argument --sky-scale: 0 is outside 1..1024"),
        (["--raw-cache", "lots"], "--raw-cache: raw cache policy 'lots': expected 'keep', 'evict'"),
        (["--dask-address", "tcp://127.0.0.1:1"], "tcp://127.0.0.1:1 needs --executor dask"),
        (
            ["--executor", "dask", "--dask-address", "127.0.0.1:8786"],
            "--dask-address 127.0.0.1:8786: '127.0.0.1:8786' is not a Dask scheduler address",
        ),
    ],
)
def test_bad_options_are_one_line_before_any_work(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("ASTROCLIP_STORAGE", str(tmp_path / "unused"))
    storage = tmp_path / "data"
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--storage", str(storage), *flags])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not storage.exists()  # nothing was generated, fetched or registered


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(storage: Path, env: dict[str, str], *flags: str) -> list[str]:
    return [
        ASTROCLIP,
        "run",
        "--storage",
        str(storage),
        "--sky-size",
        "tiny",
        "--batch-size",
        "8",
        "--checkpoint-every",
        "4",
        "--device",
        "cpu",
        *flags,
    ]


@pytest.mark.slow
def test_killed_training_resumes_and_never_loses_the_model(tmp_path: Path) -> None:
    storage = tmp_path / "data"
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "OMP_NUM_THREADS": "1"}
    env.pop("ASTROCLIP_STORAGE", None)
    first = subprocess.run(
        _run(storage, env, "--steps", "8"), env=env, capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr[-3000:]
    models = storage / "models" / "edr"
    model = models / "tiny-v1" / "model.safetensors"
    digest, current = _digest(model), (models / "current.json").read_bytes()
    embeddings = sorted((storage / "embeddings" / "edr" / "tiny-v1").rglob("*.parquet"))
    assert embeddings

    # A new config (seed 1), killed with SIGKILL once its first checkpoint is on disk.
    command = _run(storage, env, "--steps", "40", "--seed", "1")
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    try:
        while not list((models / ".runs").glob("tiny-v1/*/checkpoint.pt")):
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # The published model, the pointer to it and its embeddings are untouched.
    assert _digest(model) == digest
    assert (models / "current.json").read_bytes() == current
    assert sorted((storage / "embeddings" / "edr" / "tiny-v1").rglob("*.parquet")) == embeddings

    again = subprocess.run(command, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming tiny-v1 from its checkpoint at step" in again.stderr, again.stderr[-3000:]
    assert _digest(model) != digest
    assert not (models / ".runs").exists()
    leftovers = [p for p in storage.rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers


def test_a_failure_is_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("ASTROCLIP_STORAGE", str(tmp_path / "unused"))
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    code = main(["run", "--storage", str(not_a_folder), "--sky-size", "tiny"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and "Not a directory" in err[0] and str(not_a_folder) in err[0], err


def test_a_port_in_use_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import socket

    from astroclip_core.samplesky.service import ensure_published

    ensure_published(tmp_path / "sky", ["edr"], size="tiny")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        code = main(["sample-sky", "serve", "--root", str(tmp_path / "sky"), "--port", str(port)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert f"127.0.0.1:{port}" in err and "in use" in err, err
