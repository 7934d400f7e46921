"""Recovery on the tiny sample sky, against one uninterrupted run of every stage.

- A cached cutout and a cached coadd damaged on disk are fetched again by the next run: no
  galaxy drops out of the pairs or the Hugging Face dataset, and the partition does not fail.
- Each stage (ingest, publish, train, embed) is SIGKILLed in a process of its own and run
  again by a new process: the outputs equal the uninterrupted run's, and no temporary file or
  folder is left under the data root. Ingest, train and embed die at a random (seeded)
  moment; publish dies while its build folder exists, which is what left a hidden
  ``hf/.edr.tmp-*`` folder behind for good before (issue 12).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import torch

from astroclip_core.storage import StorageLayout
from astroclip_core.training.checkpoint import load_model
from astroclip_core.training.steps import current_model
from tests.pipeline_support import make_tiny_sky, resources
from tests.stage_process import RELEASE, run_stage

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SEED = 12
KILLED_STAGES = ("ingest", "publish", "train", "embed")
# One thread each: the processes compare bit for bit, and the machine has two cores.
# The raw cache is kept: one test damages cached downloads and checks they are fetched again.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ASTROCLIP_RAW_CACHE": "keep"}
STAGE_TIMEOUT_S = 240.0


class StageProcess:
    """``tests.stage_process`` running some stages in a child process, with its event file."""

    def __init__(self, base: Path, name: str, storage: Path, sky: Path, stages: list[str]) -> None:
        self.events = base / f"{name}.events"
        self.log = base / f"{name}.log"
        args = [str(storage), str(sky), str(base / "dagster_home"), str(self.events), *stages]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.stage_process", *args, "--hold"],
                cwd=REPO,
                env=ENV,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def lines(self) -> list[str]:
        """The event lines written so far."""
        return self.events.read_text().splitlines() if self.events.exists() else []

    def wait_for(self, prefix: str) -> str:
        """Block until an event line starts with ``prefix``; fail with the log if it dies first."""
        deadline = time.monotonic() + STAGE_TIMEOUT_S
        while time.monotonic() < deadline:
            found = [line for line in self.lines() if line.startswith(prefix)]
            if found:
                return found[0]
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.kill()
        tail = self.log.read_text()[-4000:]
        raise AssertionError(f"stage process never logged {prefix!r}; its log ends:\n{tail}")

    def wait_until_exists(self, root: Path, pattern: str, stage: str) -> None:
        """Block until ``root`` holds a path matching ``pattern``, or ``stage`` is done."""
        deadline = time.monotonic() + STAGE_TIMEOUT_S
        while time.monotonic() < deadline and not any(root.glob(pattern)):
            if any(line.startswith(f"done {stage}") for line in self.lines()):
                return
            time.sleep(0.005)

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def sky(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sky(tmp_path_factory.mktemp("recovery-sky"), [RELEASE])


@pytest.fixture(scope="module")
def reference(sky: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every stage once, uninterrupted, in one process: its data root and stage durations."""
    base = tmp_path_factory.mktemp("reference")
    stages = ["catalog", *KILLED_STAGES]
    run = StageProcess(base, "all", base / "storage", sky, stages)
    run.wait_for(f"done {stages[-1]}")
    run.kill()
    seconds = {}
    for line in run.lines():
        if line.startswith("done "):
            _, stage, secs = line.split()
            seconds[stage] = float(secs)
    return {"root": base / "storage", "seconds": seconds}


def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def _leftovers(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" in p.name]


def _same_model(a: StorageLayout, b: StorageLayout) -> None:
    ref_a, ref_b = current_model(a, RELEASE), current_model(b, RELEASE)
    assert ref_a.name == ref_b.name
    wa, wb = load_model(ref_a.model_path).state_dict(), load_model(ref_b.model_path).state_dict()
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    history_a, history_b = (
        pq.read_table(Path(r.model_path).with_name("history.parquet")).column("loss").to_pylist()
        for r in (ref_a, ref_b)
    )
    assert history_a == history_b and len(history_a) > 0


def test_damaged_cached_downloads_are_fetched_again(
    reference: dict, sky: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("ASTROCLIP_RAW_CACHE", "keep")
    ref_root, root = reference["root"], tmp_path / "storage"
    shutil.copytree(ref_root, root)
    (cutout,) = sorted(root.glob("raw/legacysurvey/*/cutouts/*/*/*.fits"))[:1]
    (coadd,) = sorted(root.glob("raw/desi/**/coadd-*.fits"))[:1]
    originals = {cutout: cutout.read_bytes(), coadd: coadd.read_bytes()}
    for path, data in originals.items():
        path.write_bytes(data[: len(data) // 2])  # damaged on disk after it was cached

    (tmp_path / "dagster_home").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "dagster_home")) as instance:
        instance.add_dynamic_partitions("releases", [RELEASE])
        res = resources(str(root), sky)
        for stage in ("catalog", "ingest", "publish"):
            run_stage(instance, stage, res)

    for path, data in originals.items():
        assert path.read_bytes() == data, f"{path} was not fetched again"
    ref_files, files = _files(ref_root), _files(root)
    for prefix in ("pairs/", "failures/", "hf/"):
        names = [n for n in ref_files if n.startswith(prefix)]
        assert names and names == [n for n in files if n.startswith(prefix)]
        for name in names:
            assert files[name].read_bytes() == ref_files[name].read_bytes(), name


def test_each_stage_killed_at_a_random_moment_then_rerun_matches(
    reference: dict, sky: Path, tmp_path: Path
):
    rng = random.Random(SEED)
    root = tmp_path / "storage"
    previous = "catalog"
    killed_at = {}
    for i, stage in enumerate(KILLED_STAGES):
        # The new process first runs again the stage the previous one was killed in.
        run = StageProcess(tmp_path, f"{i}-{stage}", root, sky, [previous, stage])
        run.wait_for(f"start {stage}")
        t0 = time.monotonic()
        if stage == "publish":
            run.wait_until_exists(root, f"hf/.{RELEASE}.tmp-*", stage)
        else:
            # A moment in the later part of the stage, where it writes (its start is mostly
            # the Dagster run starting up); the stage may also have just finished.
            time.sleep(rng.uniform(0.4, 0.95) * reference["seconds"][stage])
        delay = time.monotonic() - t0
        run.kill()
        killed_at[stage] = (
            round(delay, 2),
            any(x.startswith("done") for x in run.lines()[2:]),
            _leftovers(root),
        )
        previous = stage
    final = StageProcess(tmp_path, "rerun-embed", root, sky, [previous])
    final.wait_for(f"done {previous}")
    final.kill()

    ref_root = reference["root"]
    note = f"killed after (seconds, stage had finished, temporaries left): {killed_at}"
    assert killed_at["publish"][2], f"publish's kill left no build folder to clean: {note}"
    assert _leftovers(root) == [], note
    ref_files, files = _files(ref_root), _files(root)
    assert sorted(files) == sorted(ref_files), note
    _same_model(StorageLayout(str(ref_root)), StorageLayout(str(root)))
    model_files = {p.relative_to(ref_root).as_posix() for p in ref_root.glob("models/**/*")}
    for name in ref_files:
        if name in model_files:  # torch.save and the loss-curve PNG are compared above
            continue
        assert files[name].read_bytes() == ref_files[name].read_bytes(), name
