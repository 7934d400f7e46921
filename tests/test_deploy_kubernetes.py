"""deploy/helm-values.yaml and pipelines/k8s.py, checked by Dagster's own config schemas.

There is no cluster and no ``helm`` here, so ``chart_instance`` renders the parts of the
instance (dagster.yaml) that the values set, as the chart's templates do
(templates/helpers/instance/*.tpl in Dagster's helm/dagster, chart 1.13). The result goes
through Dagster's instance loader and the config schemas of the classes it names
(``K8sRunLauncher``, the Postgres storages, ``QueuedRunCoordinator``); the Kubernetes parts
through dagster-k8s, which checks their keys against the Kubernetes API models. Like the chart's
values schema, the renderer refuses keys the chart does not have.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import UserDefinedDagsterK8sConfig
from dagster_postgres import (
    PostgresEventLogStorage,
    PostgresRunStorage,
    PostgresScheduleStorage,
)

REPO = Path(__file__).resolve().parents[1]
VALUES = REPO / "deploy" / "helm-values.yaml"
RELEASE, NAMESPACE = "astroclip", "astroclip"
FULLNAME = f"{RELEASE}-dagster"  # the chart's dagster.fullname for a release not named dagster
DAGSTER_HOME = "/opt/dagster/dagster_home"  # the chart's global.dagsterHome default

# keys of the chart's values schema (helm/dagster/schema/.../run_launcher.py, daemon.py)
K8S_LAUNCHER_KEYS = {
    "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
    "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
    "failPodOnRunFailure", "resources", "schedulerName", "securityContext", "runK8sConfig",
}  # fmt: skip
RUN_K8S_CONFIG_KEYS = {
    "containerConfig": "container_config",
    "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata",
    "jobSpecConfig": "job_spec_config",
    "jobMetadata": "job_metadata",
}
QUEUE_KEYS = {
    "maxConcurrentRuns": "max_concurrent_runs",
    "tagConcurrencyLimits": "tag_concurrency_limits",
    "dequeueIntervalSeconds": "dequeue_interval_seconds",
    "dequeueUseThreads": "dequeue_use_threads",
    "dequeueNumWorkers": "dequeue_num_workers",
}
MONITORING_KEYS = {
    "enabled": "enabled",
    "startTimeoutSeconds": "start_timeout_seconds",
    "cancelTimeoutSeconds": "cancel_timeout_seconds",
    "maxResumeRunAttempts": "max_resume_run_attempts",
    "pollIntervalSeconds": "poll_interval_seconds",
    "freeSlotsAfterRunEndSeconds": "free_slots_after_run_end_seconds",
}


def _refuse_unknown(section: str, given: dict, known: set[str] | dict) -> None:
    if unknown := set(given) - set(known):
        raise ValueError(f"{section}: the chart has no key {sorted(unknown)}")


def _names(refs: list[dict]) -> list[str]:
    return [ref["name"] for ref in refs if "name" in ref]


def _postgres(values: dict) -> dict:
    """templates/helpers/instance/_postgresql.tpl, for an external server."""
    pg = values["postgresql"]
    db = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg.get("postgresqlParams", {}),
    }
    if pg.get("postgresqlScheme"):
        db["scheme"] = pg["postgresqlScheme"]
    return {"postgres_db": db}


def _run_launcher(values: dict) -> dict:
    """templates/helpers/instance/_run-launcher.tpl, K8sRunLauncher."""
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    _refuse_unknown("runLauncher.config.k8sRunLauncher", k8s, K8S_LAUNCHER_KEYS)
    config: dict[str, Any] = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": k8s.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": k8s["imagePullPolicy"],
        "service_account_name": FULLNAME,
        "dagster_home": values.get("global", {}).get("dagsterHome", DAGSTER_HOME),
        "instance_config_map": f"{FULLNAME}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    if k8s.get("kubeconfigFile"):
        config["kubeconfig_file"] = k8s["kubeconfigFile"]
    if "image" in k8s:
        config["job_image"] = f"{k8s['image']['repository']}:{k8s['image']['tag']}"
    if values.get("imagePullSecrets"):
        config["image_pull_secrets"] = values["imagePullSecrets"]
    for key, name in [("envConfigMaps", "env_config_maps"), ("envSecrets", "env_secrets")]:
        if k8s.get(key):
            config[name] = _names(k8s[key])
    simple = {
        "envVars": "env_vars",
        "volumeMounts": "volume_mounts",
        "volumes": "volumes",
        "labels": "labels",
        "resources": "resources",
        "schedulerName": "scheduler_name",
        "securityContext": "security_context",
    }
    config |= {name: k8s[key] for key, name in simple.items() if k8s.get(key)}
    if k8s.get("failPodOnRunFailure"):
        config["fail_pod_on_run_failure"] = True
    if run_k8s := k8s.get("runK8sConfig"):
        _refuse_unknown("runK8sConfig", run_k8s, RUN_K8S_CONFIG_KEYS)
        config["run_k8s_config"] = {RUN_K8S_CONFIG_KEYS[k]: v for k, v in run_k8s.items() if v}
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def _run_coordinator(values: dict) -> dict:
    """templates/helpers/instance/_run-coordinator.tpl, QueuedRunCoordinator.

    As the template does, a config with any value set also gets ``max_concurrent_runs``
    (-1 when unset).
    """
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == "QueuedRunCoordinator"
    queue = coordinator["config"]["queuedRunCoordinator"]
    _refuse_unknown("queuedRunCoordinator", queue, QUEUE_KEYS)
    section: dict[str, Any] = {
        "module": "dagster.core.run_coordinator",
        "class": "QueuedRunCoordinator",
    }
    if any(v not in (None, [], "") for v in queue.values()):
        config = {QUEUE_KEYS[k]: v for k, v in queue.items() if v not in (None, [])}
        section["config"] = {"max_concurrent_runs": -1} | config
    return section


def _concurrency(values: dict) -> dict:
    """templates/helpers/instance/_concurrency.tpl (rendered when concurrency.enabled)."""
    given = values["concurrency"]
    pools = {
        {"defaultLimit": "default_limit", "granularity": "granularity"}[k]: v
        for k, v in given.get("pools", {}).items()
    }
    runs = {
        {"maxConcurrentRuns": "max_concurrent_runs"}[k]: v for k, v in given.get("runs", {}).items()
    }
    return {k: v for k, v in {"pools": pools, "runs": runs}.items() if v}


def chart_instance(values: dict) -> dict:
    """The dagster.yaml sections the chart's configmap-instance.yaml renders from ``values``."""
    storage = _postgres(values)
    instance: dict[str, Any] = {
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            "config": storage,
        },
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": storage,
        },
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": storage,
        },
        "run_launcher": _run_launcher(values),
        "run_coordinator": _run_coordinator(values),
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }
    monitoring = values["dagsterDaemon"].get("runMonitoring", {})
    if monitoring.get("enabled"):
        _refuse_unknown("runMonitoring", monitoring, MONITORING_KEYS)
        instance["run_monitoring"] = {MONITORING_KEYS[k]: v for k, v in monitoring.items()}
    if values.get("concurrency", {}).get("enabled"):
        instance["concurrency"] = _concurrency(values)
    return instance


def _load_instance_config(instance: dict, home: Path) -> dict:
    """Dagster's own loader of $DAGSTER_HOME/dagster.yaml (schema and cross-section rules)."""
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance))
    config, _ = dagster_instance_config(str(home))
    return config


def _check_class_config(klass: type, config: dict) -> None:
    result = process_config(klass.config_type(), config)
    assert result.success, f"{klass.__name__}: {[e.message for e in result.errors]}"


@pytest.fixture
def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def test_instance_from_the_values_loads_through_dagsters_schemas(values, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "from-the-secret")  # the chart's env for every pod
    config = _load_instance_config(chart_instance(values), tmp_path)
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    _check_class_config(K8sRunLauncher, launcher["config"])
    UserDefinedDagsterK8sConfig.from_dict(launcher["config"]["run_k8s_config"])
    for key, klass in [
        ("run_storage", PostgresRunStorage),
        ("event_log_storage", PostgresEventLogStorage),
        ("schedule_storage", PostgresScheduleStorage),
    ]:
        _check_class_config(klass, config[key]["config"])
    _check_class_config(QueuedRunCoordinator, config["run_coordinator"]["config"])
    assert config["run_coordinator"]["config"]["max_concurrent_runs"] > 3  # not SQLite's cap
    assert "password" not in yaml.safe_dump(values["postgresql"])


def test_a_misspelled_kubernetes_key_is_refused(values):
    container = {"resourcez": {"limits": {"memory": "4Gi"}}}
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    launcher["runK8sConfig"]["containerConfig"] = container
    config = _run_launcher(values)["config"]
    assert process_config(K8sRunLauncher.config_type(), config).success  # a permissive dict
    with pytest.raises(Exception, match="Unexpected keys in model class V1Container"):
        UserDefinedDagsterK8sConfig.from_dict(config["run_k8s_config"])
    launcher["jobNamespaze"] = "x"
    with pytest.raises(ValueError, match="jobNamespaze"):
        _run_launcher(values)


def test_pool_limits_in_the_values_would_stop_the_daemon(values, tmp_path):
    """Why the cutout pool's limit is set with `dagster instance concurrency set` (README).

    The chart writes the run queue's limit into run_coordinator, and Dagster refuses any
    top-level ``concurrency`` settings, pools included, beside it.
    """
    with_pools = copy.deepcopy(values)
    with_pools["concurrency"] = {"enabled": True, "pools": {"defaultLimit": 2}}
    with pytest.raises(DagsterInvalidConfigError, match="incompatible with the `concurrency"):
        _load_instance_config(chart_instance(with_pools), tmp_path)


def test_user_deployment_serves_the_k8s_location_with_a_valid_container_context(values):
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "pipelines.k8s"]
    # templates/helpers/_helpers.tpl (dagster-user-deployments), k8sContainerContext
    context = {
        "k8s": {
            "image_pull_policy": deployment["image"]["pullPolicy"],
            "env_config_maps": [f"{FULLNAME}-{deployment['name']}-user-env"],
            "env_secrets": _names(deployment["envSecrets"]),
            "namespace": NAMESPACE,
            "service_account_name": f"{FULLNAME}-user-deployments",
            "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}},
        }
    }
    parsed = K8sContainerContext.create_from_config(context)
    assert parsed.run_k8s_config.container_config["env_from"] == [
        {"config_map_ref": {"name": f"{FULLNAME}-astroclip-user-env"}},
        {"secret_ref": {"name": "astroclip-data-credentials"}},
    ]
    assert deployment["env"]["ASTROCLIP_STORAGE"].startswith("s3://")


def test_k8s_location_runs_every_job_with_k8s_job_executor():
    from pipelines.k8s import defs

    dg.Definitions.validate_loadable(defs)
    names = [job.name for job in defs.jobs]
    assert {"catalog_job", "ingest_job", "train_job"} <= set(names)
    for name in names:
        assert defs.resolve_job_def(name).executor_def is k8s_job_executor, name
    assert defs.resolve_implicit_global_asset_job_def().executor_def is k8s_job_executor
    targets = [job for sensor in defs.sensors for job in sensor.jobs]
    targets += [schedule.job for schedule in defs.schedules]
    assert targets and all(job.executor_def is k8s_job_executor for job in targets)
