"""Where a job's steps run: in this process, in subprocesses, or on a Dask cluster.

``ingest_job`` takes its executor from run config, so the same job runs anywhere::

    execution:
      config:
        in_process: {}                                  # one process, one step at a time
        multiprocess: {max_concurrent: 2}               # Dagster's default: a subprocess per step
        dask: {cluster: {existing: {address: tcp://10.0.0.5:8786}}}   # a running scheduler
        dask: {cluster: {local: {n_workers: 4}}}        # a LocalCluster for this run
        dask: {cluster: {slurm: {cores: 32, memory: 120GB, ...}}}     # dask-jobqueue, per run

The ``dask`` mode is ``dagster-dask``'s executor with its config schema, with four changes:

- It works with current Dask, which fails on dagster-dask's task arguments (see
  :class:`StepOnWorker`).
- Task keys name the run (``<job>.<step>.<run id>``). Dask treats equal keys as one result,
  so with dagster-dask's ``<job>.<step>`` keys, concurrent runs of one job on one scheduler
  (a partitioned backfill) ran only the first run's steps (dagster-io/dagster#21418).
- A step whose upstream step did not succeed is not run (dagster-dask ran it anyway).
- A step claims its Dagster concurrency pool slot on the worker, as an in-process step does,
  so the ``legacysurvey_cutouts`` pool caps cutout steps across workers and runs.

Steps pass nothing to each other: every asset writes under the shared data root and returns
a ``MaterializeResult``, so workers need the same data root (a shared folder or ``s3://``)
and the same Dagster instance (``$DAGSTER_HOME``; PostgreSQL across machines).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import dagster as dg
import dask.distributed
from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster._core.errors import raise_execution_interrupts
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.execution.api import ExecuteRunWithPlanIterable, create_execution_plan
from dagster._core.execution.context.system import PlanOrchestrationContext
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.in_process import inprocess_execution_iterator
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.dagster_run import DagsterRun
from dagster._utils import iterate_with_context
from dagster_dask.executor import DaskExecutor, dask_executor, get_dask_resource_requirements
from distributed.comm.addressing import parse_address, parse_host_port

EXECUTORS = ("in_process", "multiprocess", "dask")
# Seconds to wait for a scheduler to answer, and then for it to have a worker.
SCHEDULER_TIMEOUT_S = 10.0

# The Dask cluster managers dagster-dask's config can name, other than an existing scheduler.
_CLUSTER_CLASSES = {
    "local": "dask.distributed:LocalCluster",
    "ssh": "dask.distributed:SSHCluster",
    "yarn": "dask_yarn:YarnCluster",
    "pbs": "dask_jobqueue:PBSCluster",
    "moab": "dask_jobqueue:MoabCluster",
    "sge": "dask_jobqueue:SGECluster",
    "lsf": "dask_jobqueue:LSFCluster",
    "slurm": "dask_jobqueue:SLURMCluster",
    "oar": "dask_jobqueue:OARCluster",
    "kube": "dask_kubernetes:KubeCluster",
}


class SchedulerUnreachableError(ConnectionError):
    """No Dask scheduler answered at an address, or it has no worker to run steps."""


@dataclass(frozen=True)
class StepEvents:
    """The events of one step, as a Dask task returns them (Dask cannot size a list of them)."""

    events: list[DagsterEvent]

    @property
    def succeeded(self) -> bool:
        """Whether the step succeeded."""
        return any(e.event_type == DagsterEventType.STEP_SUCCESS for e in self.events)


@dataclass(frozen=True)
class StepOnWorker:
    """One step of a run, as a Dask task: called on a worker with its upstream steps' events.

    A dataclass, because Dask looks inside tuples, lists and dicts given to ``submit`` (for
    futures), and Dagster's run and state objects are tuples that refuse to be iterated: passed
    as plain arguments, as dagster-dask passes them, they fail with current Dask.
    """

    recon_job: ReconstructableJob
    dagster_run: DagsterRun
    run_config: Mapping[str, object]
    step_key: str
    instance_ref: InstanceRef
    known_state: KnownExecutionState | None

    def __call__(self, upstream: Sequence[StepEvents]) -> StepEvents:
        """Run the step here; return its events (which it also writes to the instance).

        ``upstream`` holds the events of the steps it depends on (passing their futures is
        what makes Dask wait for them). If one of them did not succeed, nothing runs and no
        event is returned: the run fails on that step. The step claims its concurrency pool
        slot, if its pool has a limit, before it starts, as an in-process step does.
        """
        if not all(step.succeeded for step in upstream):
            return StepEvents([])
        with dg.DagsterInstance.from_ref(self.instance_ref) as instance:
            plan = create_execution_plan(
                self.recon_job,
                run_config=self.run_config,
                step_keys_to_execute=[self.step_key],
                known_state=self.known_state,
            )
            events = ExecuteRunWithPlanIterable(
                execution_plan=plan,
                iterator=inprocess_execution_iterator,
                execution_context_manager=PlanExecutionContextManager(
                    job=self.recon_job.with_repository_load_data(plan.repository_load_data),
                    execution_plan=plan,
                    run_config=self.run_config,
                    dagster_run=self.dagster_run,
                    instance=instance,
                    retry_mode=RetryMode.DISABLED,
                ),
            )
            return StepEvents(list(events))


class RunScopedDaskExecutor(DaskExecutor):
    """dagster-dask's executor with run-scoped task keys, skipped dependants and pools."""

    def _cluster(self, stack: ExitStack, job_name: str) -> str | object:
        if self.cluster_type == "existing":
            return self.cluster_configuration["address"]
        if self.cluster_type not in _CLUSTER_CLASSES:
            raise ValueError(
                f"Dask cluster type {self.cluster_type!r} is not one of "
                f"{['existing', *_CLUSTER_CLASSES]}"
            )
        module, name = _CLUSTER_CLASSES[self.cluster_type].split(":")
        cluster_class = getattr(importlib.import_module(module), name)
        return stack.enter_context(cluster_class(**self.build_dict(job_name)))

    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[DagsterEvent]:
        """Submit every step to the cluster with its dependencies; yield events as steps end."""
        if not plan_context.instance.is_persistent:
            raise dg.DagsterInvariantViolationError(
                "the dask executor needs a persistent Dagster instance ($DAGSTER_HOME)"
            )
        job_name, run_id = plan_context.job_name, plan_context.run_id
        with ExitStack() as stack:
            cluster = self._cluster(stack, job_name)
            client = stack.enter_context(dask.distributed.Client(cluster, set_as_default=False))
            futures: dict[str, dask.distributed.Future] = {}
            for level in execution_plan.get_steps_to_execute_by_level():
                for step in level:
                    upstream = [
                        futures[key] for inp in step.step_inputs for key in inp.dependency_keys
                    ]
                    futures[step.key] = client.submit(
                        StepOnWorker(
                            plan_context.reconstructable_job,
                            plan_context.dagster_run,
                            plan_context.run_config,
                            step.key,
                            plan_context.instance.get_ref(),
                            execution_plan.known_state,
                        ),
                        upstream,
                        key=f"{job_name}.{step.key}.{run_id}",
                        resources=get_dask_resource_requirements(step.tags),
                    )
            done = dask.distributed.as_completed(
                futures.values(), loop=client.loop, with_results=True
            )
            for _future, step in iterate_with_context(raise_execution_interrupts, done):
                yield from step.events


def _requirements(config: Mapping[str, object]) -> Sequence[dg.ExecutorRequirement]:
    return [] if "in_process" in config else dg.multiple_process_executor_requirements()


# Dagster's own schemas for the in-process and multiprocess modes, and dagster-dask's clusters.
_DAGSTER_MODES = dg.multi_or_in_process_executor.config_schema.config_type.fields
_DASK_CLUSTERS = dask_executor.config_schema.config_type.fields["cluster"].config_type


@dg.executor(
    name="in_process_multiprocess_or_dask",
    config_schema=dg.Field(
        dg.Selector(
            {
                "in_process": _DAGSTER_MODES["in_process"],
                "multiprocess": _DAGSTER_MODES["multiprocess"],
                "dask": {
                    "cluster": dg.Field(
                        _DASK_CLUSTERS,
                        default_value={"local": {}},
                        description="dagster-dask's cluster: an existing scheduler's address, "
                        "or a cluster started for the run (default: a LocalCluster).",
                    )
                },
            }
        ),
        default_value={"multiprocess": {}},
    ),
    requirements=_requirements,
)
def selectable_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """In-process, multiprocess (the default, as Dagster's) or Dask, chosen by run config."""
    ((mode, config),) = init_context.executor_config.items()
    if mode == "dask":
        ((cluster_type, cluster_config),) = config["cluster"].items()
        return RunScopedDaskExecutor(cluster_type, cluster_config)
    return dg.multi_or_in_process_executor.executor_creation_fn(
        dg.InitExecutorContext(
            job=init_context.job,
            executor_def=dg.multi_or_in_process_executor,
            executor_config={mode: config},
            instance=init_context.instance,
        )
    )


def execution_config(executor: str, dask_address: str | None = None) -> dict[str, object]:
    """The ``execution`` run config that selects ``executor`` (a Dask ``dask_address``, if any).

    Raises ValueError naming the value when ``executor`` is not one of :data:`EXECUTORS`, or
    when an address is given for another executor than ``dask``.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor {executor!r} is not one of {list(EXECUTORS)}")
    if dask_address and executor != "dask":
        raise ValueError(f"a Dask address ({dask_address}) needs the dask executor, not {executor}")
    if executor != "dask":
        return {"execution": {"config": {executor: {}}}}
    cluster = {"existing": {"address": dask_address}} if dask_address else {"local": {}}
    return {"execution": {"config": {"dask": {"cluster": cluster}}}}


def check_scheduler(address: str, timeout_s: float = SCHEDULER_TIMEOUT_S) -> int:
    """Connect to the Dask scheduler at ``address``; return how many workers it has.

    Raises :class:`SchedulerUnreachableError` naming the address when it is not a Dask
    address (``tcp://HOST:PORT``), when nothing answers there within ``timeout_s``, or when the
    scheduler has no worker after another ``timeout_s`` (steps would wait for ever).
    """
    try:
        scheme, location = parse_address(address, strict=True)
        if scheme in ("tcp", "tls"):
            parse_host_port(location)
    except ValueError as err:
        raise SchedulerUnreachableError(
            f"{address!r} is not a Dask scheduler address like tcp://HOST:PORT ({err})"
        ) from None
    try:
        client = dask.distributed.Client(address, timeout=f"{timeout_s}s", set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise SchedulerUnreachableError(
            f"no Dask scheduler answered at {address} within {timeout_s:g} s ({err})"
        ) from None
    with client:
        try:
            client.wait_for_workers(1, timeout=timeout_s)
        except TimeoutError:
            raise SchedulerUnreachableError(
                f"the Dask scheduler at {address} has no worker after {timeout_s:g} s; "
                f"start some with `dask worker {address}`"
            ) from None
        return len(client.scheduler_info()["workers"])


@contextmanager
def dask_scheduler(address: str | None) -> Iterator[tuple[str, int]]:
    """Yield (address, workers) of a Dask scheduler for a whole stage's runs.

    With ``address``, that scheduler, checked by :func:`check_scheduler`. Without, a
    ``LocalCluster`` of one single-threaded worker process per core (Dagster steps are not
    thread-safe), shared by every run of the stage and closed on exit.
    """
    if address:
        yield address, check_scheduler(address)
        return
    with dask.distributed.LocalCluster(threads_per_worker=1, processes=True) as cluster:
        yield cluster.scheduler_address, len(cluster.workers)
