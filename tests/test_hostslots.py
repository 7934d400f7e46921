"""The cutout request cap holds across processes: two runs share one cap per service host."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from astroclip_core.formats.legacysurvey import write_cutout
from astroclip_core.sources.faults import FaultConfig, FaultServer, Response
from astroclip_core.sources.hostslots import HostSlots, host_key, lock_dir

CAP = 3
SIZE_PIX = 8
REPO = Path(__file__).resolve().parents[1]

# One `astroclip run`'s cutout step, in a process of its own: fetch_cutouts with the cap.
CLIENT = """
import sys
import numpy as np
from astroclip_core.sources.legacysurvey import LegacySurveySource
from astroclip_core.storage import StorageLayout

url, cache, offset, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
source = LegacySurveySource(cutout_url=url, size_pix=8)
ra = 150.0 + offset + np.arange(n) * 1e-3
batch = source.fetch_cutouts(ra, np.full(n, 2.0), StorageLayout(cache), concurrency=CAP)
assert batch.ok.all(), batch.reasons
""".replace("CAP", str(CAP))


class _Counting:
    """A cutout backend that records how many requests it answers at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = self.total = 0
        self.body = write_cutout(np.ones((3, SIZE_PIX, SIZE_PIX), np.float32), 150.0, 2.0)

    def __call__(self, target: str) -> Response:
        with self.lock:
            self.in_flight += 1
            self.total += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        time.sleep(0.03)  # a slow service: requests overlap when clients allow it
        with self.lock:
            self.in_flight -= 1
        return Response(200, self.body, "image/fits")


def test_two_processes_share_one_cap(tmp_path: Path) -> None:
    backend = _Counting()
    env = {**os.environ, "ASTROCLIP_LOCK_DIR": str(tmp_path / "locks")}
    with FaultServer(backend, FaultConfig(fraction=0.0)) as server:
        url = server.url + "viewer/fits-cutout"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CLIENT, url, str(tmp_path / f"cache{i}"), str(i), "40"],
                cwd=REPO,
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
    assert backend.total == 80
    # Each process alone would make CAP requests at once; together they still make CAP.
    assert backend.max_in_flight == CAP


def test_slots_are_freed_when_a_holder_dies(tmp_path: Path) -> None:
    folder = tmp_path / "locks"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from astroclip_core.sources.hostslots import HostSlots\n"
            "with HostSlots('http://h:1/x', 1, folder=__import__('pathlib').Path(sys.argv[1])).slot():\n"
            "    print('held', flush=True); time.sleep(60)\n",
            str(folder),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    got = threading.Event()

    def take() -> None:
        with HostSlots("http://h:1/x", 1, folder=folder).slot():
            got.set()

    t = threading.Thread(target=take, daemon=True)
    t.start()
    assert not got.wait(0.3)  # the only slot is taken
    holder.kill()
    holder.wait()
    assert got.wait(10)  # the kernel dropped the dead process's lock


def test_host_key_and_lock_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert host_key("https://www.legacysurvey.org/viewer/fits-cutout") == "www.legacysurvey.org"
    assert host_key("http://127.0.0.1:8080/viewer") == "127.0.0.1"
    monkeypatch.setenv("ASTROCLIP_LOCK_DIR", str(tmp_path))
    assert lock_dir() == tmp_path
    monkeypatch.delenv("ASTROCLIP_LOCK_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert lock_dir() == tmp_path / "run" / "astroclip" / "locks"
    with pytest.raises(ValueError, match="must be >= 1"):
        HostSlots("http://h/", 0)


def _hold(url: str, folder: str) -> tuple[float, float, bool]:
    """In a Dask task: hold a slot of a 1-request cap for 0.3 s; (start, end, had a semaphore)."""
    slots = HostSlots.for_url(url, 1)
    slots = HostSlots(url, 1, folder=Path(folder), semaphore=slots.semaphore)
    with slots.slot():
        start = time.monotonic()
        time.sleep(0.3)
        return start, time.monotonic(), slots.semaphore is not None


def test_a_dask_cluster_shares_one_cap_across_machines(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    url = "http://service.example:80/cutout"
    assert HostSlots.for_url(url, 1).semaphore is None  # not in a Dask task
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        # Different lock folders stand for two machines: only the semaphore can serialise them.
        futures = [
            client.submit(_hold, url, str(tmp_path / f"machine{i}"), pure=False) for i in range(2)
        ]
        (a0, a1, sem_a), (b0, b1, sem_b) = client.gather(futures)
    assert sem_a and sem_b
    assert a1 <= b0 or b1 <= a0  # never at once
