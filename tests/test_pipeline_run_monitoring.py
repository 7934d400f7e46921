"""dagster_home/dagster.yaml turns on run monitoring, which works with the default run launcher:
a run whose process was killed with SIGKILL is marked failed instead of staying STARTED."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster._daemon.monitoring import execute_run_monitoring_iteration

from astroclip_core.storage import REPO_ROOT

# A run that signals it has started, then hangs. Its runtime limit is lowered by the run tag
# that dagster.yaml names for jobs that need another limit, so the test need not wait hours.
STALLING_RUN = """
import sys, time
from pathlib import Path
import dagster as dg

@dg.asset
def stalls() -> None:
    Path(sys.argv[1]).write_text("started")
    time.sleep(300)

dg.materialize(
    [stalls], instance=dg.DagsterInstance.get(), tags={"dagster/max_runtime_seconds": "1"}
)
"""


def _wait_for(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def test_a_killed_run_is_marked_failed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    script, started = tmp_path / "stall.py", tmp_path / "started"
    script.write_text(STALLING_RUN)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    worker = subprocess.Popen([sys.executable, str(script), str(started)], env=env)
    try:
        _wait_for(started, timeout_s=120)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_monitoring_enabled
        assert isinstance(instance.run_launcher, DefaultRunLauncher)
        assert instance.run_monitoring_max_resume_run_attempts == 0
        assert instance.run_monitoring_max_runtime_seconds > 0
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED  # what a kill -9 leaves behind
        time.sleep(1.5)  # past the run's 1 s limit
        with WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as workspace:
            list(execute_run_monitoring_iteration(workspace, logging.getLogger(__name__)))
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE


# A run started the way `astroclip run` starts its steps: in-process, tagged with its host and pid.
TAGGED_RUN = """
import sys, time
from pathlib import Path
import dagster as dg
from pipelines.runner import _process_tags

@dg.asset
def stalls() -> None:
    Path(sys.argv[1]).write_text("started")
    time.sleep(300)

dg.materialize([stalls], instance=dg.DagsterInstance.get(), tags=_process_tags())
"""


def test_astroclip_run_fails_the_runs_of_killed_processes_at_once(tmp_path: Path) -> None:
    from pipelines.runner import fail_dead_runs

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    script = tmp_path / "tagged.py"
    script.write_text(TAGGED_RUN)
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    killed_flag, alive_flag = tmp_path / "killed", tmp_path / "alive"
    killed = subprocess.Popen([sys.executable, str(script), str(killed_flag)], env=env)
    alive = None
    try:
        _wait_for(killed_flag, timeout_s=120)  # the first creates the SQLite storage alone
        alive = subprocess.Popen([sys.executable, str(script), str(alive_flag)], env=env)
        _wait_for(alive_flag, timeout_s=120)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        with dg.DagsterInstance.from_config(str(home)) as instance:
            runs = {r.tags["astroclip/pid"]: r for r in instance.get_runs()}
            assert {r.status for r in runs.values()} == {dg.DagsterRunStatus.STARTED}
            failed = fail_dead_runs(instance)
            assert failed == [runs[str(killed.pid)].run_id]
            status = {pid: instance.get_run_by_id(r.run_id).status for pid, r in runs.items()}
            assert status[str(killed.pid)] == dg.DagsterRunStatus.FAILURE
            assert status[str(alive.pid)] == dg.DagsterRunStatus.STARTED  # still running
    finally:
        for proc in (killed, alive):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
