"""The training processes that ``contrastive_model`` launches through Dagster Pipes.

    python -m pipelines.train_process [--nproc-per-node N]

The asset (:mod:`pipelines.training`) plans the run, then starts this module through a Pipes
client (``dagster.PipesSubprocessClient`` here; another client can start it on a GPU node). The
TrainConfig arrives in the Pipes extras under :data:`EXTRA_CONFIG`. With N = 1 this process
trains. With N > 1 it runs torchrun (``torch.distributed.run``, what the ``torchrun`` command
runs) in this process, which starts N copies of this module, one per rank (any torchrun
command that runs ``-m pipelines.train_process`` starts ranks the same way).

Rank 0 opens the Pipes session and reports:

- the log records of ``astroclip_core`` (the global batch, each logged step) into the run's log;
- each history row as the custom message ``{"progress": {step, epoch, loss, accuracy, lr,
  pairs_per_s}}``;
- at the end ``{"result": TrainResult.to_dict()}``.

:func:`read_reports` is the one reader of those messages. The other ranks only read the extras.

**Dying with the step.** When ``ASTROCLIP_PARENT_PID`` is set (the asset sets it to the Dagster
step's pid when it launches on its own machine), a thread SIGKILLs this process once its parent
is no longer that process. The torchrun launcher sets it to its own pid for its workers, so a
step killed with SIGKILL takes the launcher and then the workers down with it (torchrun starts
each worker in a session of its own, so nothing else would). The re-run then resumes from the
last checkpoint without an orphan still writing to the same work folder.

This module imports ``dagster_pipes``, never ``dagster``, so a training node needs only the
library and that small package.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dagster_pipes import PipesDefaultContextLoader, PipesEnvVarParamsLoader, open_dagster_pipes

from astroclip_core.training.config import TrainConfig, TrainResult
from astroclip_core.training.train import main as train_main

PARENT_PID_ENV = "ASTROCLIP_PARENT_PID"
EXTRA_CONFIG = "train_config"  # the Pipes extra holding TrainConfig.to_dict()
PROGRESS = "progress"
RESULT = "result"
PROGRESS_FIELDS = ("step", "epoch", "loss", "accuracy", "lr", "pairs_per_s")
# How often a process checks for its parent: far below the seconds a re-run takes to start.
_WATCH_INTERVAL_S = 0.2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainReports:
    """What rank 0 reported: its progress rows in order, and the result of the run."""

    progress: tuple[dict, ...]
    result: TrainResult


def read_reports(messages: Sequence[object]) -> TrainReports:
    """The training reports among a Pipes session's custom messages.

    Raises ``RuntimeError`` when no result came (the processes ended without rank 0 finishing).
    """
    progress: list[dict] = []
    result = None
    for message in messages:
        if isinstance(message, dict) and PROGRESS in message:
            progress.append(message[PROGRESS])
        elif isinstance(message, dict) and RESULT in message:
            result = TrainResult.from_dict(message[RESULT])
    if result is None:
        raise RuntimeError(
            f"the training processes reported no result ({len(progress)} progress reports "
            "came); rank 0 sends it when training returns"
        )
    return TrainReports(tuple(progress), result)


def exit_with_parent() -> None:
    """SIGKILL this process once its parent is not ``$ASTROCLIP_PARENT_PID`` (if set), and set
    that variable to this process for the processes it starts."""
    expected = os.environ.get(PARENT_PID_ENV)
    if expected:
        parent = int(expected)

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(_WATCH_INTERVAL_S)
            log.error("the process that launched training (pid %d) is gone; stopping", parent)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
    os.environ[PARENT_PID_ENV] = str(os.getpid())


class _ToPipesLog(logging.Handler):
    """Forwards log records to the Pipes log (the Dagster run's log)."""

    def __init__(self, pipes_log: logging.Logger) -> None:
        super().__init__()
        self.pipes_log = pipes_log

    def emit(self, record: logging.LogRecord) -> None:
        self.pipes_log.log(record.levelno, self.format(record))


def _extras() -> Mapping[str, object]:
    # Read without opening a session: every rank needs the config, only rank 0 reports.
    params = PipesEnvVarParamsLoader()
    if not params.is_dagster_pipes_process():
        raise RuntimeError(
            "pipelines.train_process reads its TrainConfig from Dagster Pipes and was not "
            "started by Dagster; outside Dagster run python -m astroclip_core.training.train "
            "CONFIG.json"
        )
    with PipesDefaultContextLoader().load_context(params.load_context_params()) as data:
        return data["extras"] or {}


def train_rank() -> TrainResult:
    """Train this rank of the run in the Pipes extras; rank 0 reports it through Pipes."""
    config = TrainConfig.from_dict(_extras()[EXTRA_CONFIG])
    if int(os.environ.get("RANK", "0")) != 0:
        return train_main(config)
    with open_dagster_pipes() as pipes:
        library_log = logging.getLogger("astroclip_core")
        handler = _ToPipesLog(pipes.log)
        library_log.addHandler(handler)
        try:
            result = train_main(
                config,
                on_log=lambda row: pipes.report_custom_message(
                    {PROGRESS: {name: row[name] for name in PROGRESS_FIELDS}}
                ),
            )
        finally:
            library_log.removeHandler(handler)
        pipes.report_custom_message({RESULT: result.to_dict()})
    return result


def launch(nproc_per_node: int) -> None:
    """Run torchrun on this machine for ``nproc_per_node`` ranks of this module."""
    from torch.distributed.run import main as torchrun

    torchrun(
        ["--standalone", f"--nproc-per-node={nproc_per_node}", "-m", "pipelines.train_process"]
    )


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--nproc-per-node", type=int, default=1, help="processes (GPUs) on this machine"
    )
    args = parser.parse_args(argv)
    if args.nproc_per_node < 1:
        parser.error(f"--nproc-per-node must be >= 1, got {args.nproc_per_node}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    exit_with_parent()
    if args.nproc_per_node > 1:
        launch(args.nproc_per_node)
    else:
        train_rank()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
