"""Deployment files, checked without Docker or a cluster.

* docker-compose.yml: the Compose Specification's JSON schema (vendored offline by the
  ``check-jsonschema`` package), plus what this deployment needs (KRaft Kafka, a one-shot
  topics service, two workers with a state volume each, two executors, Prometheus);
* deploy/k8s: every manifest against the Kubernetes OpenAPI schemas of
  ``kubernetes-validate`` (offline, strict: unknown fields fail), plus probes, volumes
  and config wiring;
* every command line in compose, Kubernetes and the Dockerfile is parsed by the real
  click CLI with the container's environment, so a renamed option or a missing required
  one fails here; every ``STREAM_TRIGGERS_*`` variable set anywhere is a CLI envvar;
* the Grafana dashboard's PromQL names only metrics that ``stream_triggers.ops.metrics``
  exports, and covers all of them.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import threading
import tomllib
from collections.abc import Iterator, Mapping
from importlib.resources import files
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.process_collector import ProcessCollector

from stream_triggers.cli import cli
from stream_triggers.executor import ExecutorStats
from stream_triggers.ops.metrics import EXECUTOR_METRICS, WORKER_METRICS, executor_registry, worker_registry
from stream_triggers.ops.stats import TASK_SECONDS_BUCKETS, Buckets
from stream_triggers.stream.worker import WorkerStats

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DASHBOARD = DEPLOY / "grafana" / "stream-triggers.json"
PROMETHEUS = DEPLOY / "prometheus.yml"
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
"""Kubernetes versions the manifests are checked against: an old one still in support, and
the newest whose schemas the installed kubernetes-validate ships."""
ENV_PREFIX = "STREAM_TRIGGERS_"
ENTRYPOINT = "stream-triggers"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def k8s_docs(include_optional: bool = False) -> Iterator[tuple[Path, dict[str, Any]]]:
    paths = sorted(K8S.glob("*.yaml")) + (sorted((K8S / "optional").glob("*.yaml")) if include_optional else [])
    for path in paths:
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                yield path, doc


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_docs() if doc["kind"] == kind]


# -- Dockerfile ------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``[(INSTRUCTION, arguments)]`` with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_env() -> dict[str, str]:
    env = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def test_dockerfile_builds_the_package_into_a_slim_non_root_image() -> None:
    instructions = dockerfile_instructions()
    keywords = [k for k, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = " ".join(rest for k, rest in instructions if k == "RUN")
    assert re.search(r"pip install \.(\s|$)", runs), "the image installs the package itself"
    for keyword, rest in instructions:
        if keyword == "COPY":
            for source in shlex.split(rest)[:-1]:
                assert (ROOT / source).exists(), f"COPY source {source} is missing"
    users = [rest for k, rest in instructions if k == "USER"]
    assert users, "the image must not run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root UID (Kubernetes runAsNonRoot can verify it)"
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")
    entrypoint = json.loads(dict(instructions)["ENTRYPOINT"])
    assert entrypoint == [ENTRYPOINT]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert ENTRYPOINT in scripts
    assert dict(instructions)["EXPOSE"] == dockerfile_env()[ENV_PREFIX + "METRICS_PORT"]


def copied_sources() -> set[str]:
    copies = [rest for keyword, rest in dockerfile_instructions() if keyword == "COPY"]
    return {source for rest in copies for source in shlex.split(rest)[:-1]}


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()}
    assert copied_sources() >= {"pyproject.toml", "README.md", "stream_triggers"}
    assert not copied_sources() & ignored


def test_the_image_build_copies_every_file_pyproject_names() -> None:
    """``pip install .`` in the image fails on a readme or license file left behind."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {"pyproject.toml", project["readme"], *project.get("license-files", [])}
    assert needed <= copied_sources()


# -- docker-compose.yml -------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


def test_every_yaml_file_parses() -> None:
    paths = [COMPOSE, *DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")]
    assert len(paths) >= 10
    for path in paths:
        docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
        assert docs and all(isinstance(doc, dict) for doc in docs), path


def test_compose_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator_class(schema).iter_errors(compose)]
    assert not errors, "\n".join(errors)


def compose_command(service: dict[str, Any]) -> list[str] | None:
    command = service.get("command")
    if command is None:
        return None
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: str(value).lower() if isinstance(value, bool) else str(value) for name, value in env.items()}


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the stream-triggers image."""
    return {
        name: service
        for name, service in compose["services"].items()
        if str(service.get("image", "")).startswith("stream-triggers")
    }


def test_compose_runs_kafka_in_kraft_mode(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = compose_env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "zookeeper" not in json.dumps(compose).lower()
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "healthcheck" in kafka
    for service in app_services(compose).values():
        assert compose_env(service)[ENV_PREFIX + "BOOTSTRAP"] == "kafka:9092"


def test_compose_topics_service_runs_once_before_the_others(compose: dict[str, Any]) -> None:
    services = compose["services"]
    topics = services["topics"]
    assert compose_command(topics)[:2] == ["topics", "create"]
    assert topics["restart"] == "no"
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name, service in app_services(compose).items():
        if name != "topics":
            assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully", name
    for service in services.values():
        for dependency in service.get("depends_on") or ():
            assert dependency in services


def test_compose_workers_have_a_state_volume_each(compose: dict[str, Any]) -> None:
    state_dir = dockerfile_env()[ENV_PREFIX + "STATE_DIR"]
    workers = {n: s for n, s in app_services(compose).items() if (compose_command(s) or [""])[0] == "worker"}
    assert len(workers) >= 2
    volumes = []
    for name, service in workers.items():
        env = {**dockerfile_env(), **compose_env(service)}
        assert env[ENV_PREFIX + "STATE_DIR"] == state_dir
        mounts = [v.split(":") for v in service["volumes"] if v.split(":")[1] == state_dir]
        assert len(mounts) == 1, f"{name} mounts a volume on {state_dir}"
        volumes.append(mounts[0][0])
    assert len(set(volumes)) == len(volumes), "workers must not share a state volume"
    assert set(volumes) <= set(compose["volumes"])
    groups = {env_or_arg(compose_command(s), compose_env(s), "--group", "GROUP") for s in workers.values()}
    assert len(groups) == 1, "all workers join one consumer group"


def env_or_arg(command: list[str], env: Mapping[str, str], option: str, var: str) -> str | None:
    if option in command:
        return command[command.index(option) + 1]
    return env.get(ENV_PREFIX + var)


def test_compose_executors_run_the_demo_tasks(compose: dict[str, Any]) -> None:
    executors = [s for s in app_services(compose).values() if (compose_command(s) or [""])[0] == "executor"]
    assert len(executors) >= 2
    for service in executors:
        command = compose_command(service)
        assert command[command.index("--import") + 1] == "stream_triggers.cli.demo_tasks"


def test_compose_bind_mounts_exist(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for volume in service.get("volumes", ()):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), source


def test_prometheus_scrapes_every_worker_and_executor(compose: dict[str, Any]) -> None:
    config = load_yaml(PROMETHEUS)
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", ())
        for target in static["targets"]
    }
    services = app_services(compose)
    expected = set()
    for name, service in services.items():
        command = compose_command(service)
        if command and command[0] in ("worker", "executor"):
            env = {**dockerfile_env(), **compose_env(service)}
            port = env_or_arg(command, env, "--metrics-port", "METRICS_PORT")
            expected.add(f"{name}:{port}")
    assert targets == expected
    prometheus = compose["services"]["prometheus"]
    assert any(v.startswith("./deploy/prometheus.yml:") for v in prometheus["volumes"])


# -- Kubernetes ------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_match_the_kubernetes_schemas(version: str) -> None:
    checked = 0
    for path, doc in k8s_docs():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name} ({doc['kind']}) is not valid for Kubernetes {version}: {exc.message}")
        checked += 1
    assert checked >= 7


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == present


def test_pod_monitor_selects_the_metrics_ports() -> None:
    (monitor,) = yaml.safe_load_all((K8S / "optional" / "podmonitor.yaml").read_text())
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    (expression,) = monitor["spec"]["selector"]["matchExpressions"]
    selected = set(expression["values"])
    endpoint_ports = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    for workload in k8s_kind("StatefulSet") + k8s_kind("Deployment"):
        template = workload["spec"]["template"]
        assert template["metadata"]["labels"][expression["key"]] in selected
        ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", ())}
        assert endpoint_ports <= ports


def configmap_env() -> dict[str, str]:
    (configmap,) = k8s_kind("ConfigMap")
    return dict(configmap["data"])


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment: image ENV, then envFrom ConfigMaps, then env."""
    env = dict(dockerfile_env())
    configmaps = {doc["metadata"]["name"]: doc["data"] for doc in k8s_kind("ConfigMap")}
    for source in container.get("envFrom", ()):
        env.update(configmaps[source["configMapRef"]["name"]])
    for item in container.get("env", ()):
        env[item["name"]] = item["value"]
    return env


def only_container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def test_k8s_workers_keep_state_on_a_claim_and_expose_probes() -> None:
    (statefulset,) = k8s_kind("StatefulSet")
    container = only_container(statefulset)
    env = container_env(container)
    assert container["args"][0] == "worker"
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env[ENV_PREFIX + "STATE_DIR"]
    services = {doc["metadata"]["name"]: doc for doc in k8s_kind("Service")}
    assert statefulset["spec"]["serviceName"] in services
    assert statefulset["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 10001
    assert_probes(container, env)


def test_k8s_executors_run_the_demo_tasks_with_probes() -> None:
    (deployment,) = k8s_kind("Deployment")
    container = only_container(deployment)
    args = container["args"]
    assert args[0] == "executor" and args[args.index("--import") + 1] == "stream_triggers.cli.demo_tasks"
    assert_probes(container, container_env(container))


def assert_probes(container: dict[str, Any], env: Mapping[str, str]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert str(ports["metrics"]) == env[ENV_PREFIX + "METRICS_PORT"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_k8s_topics_job_creates_the_topics() -> None:
    (job,) = k8s_kind("Job")
    container = only_container(job)
    assert container["args"][:2] == ["topics", "create"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")


def test_k8s_pods_run_as_the_image_user() -> None:
    uid = int(next(rest for k, rest in dockerfile_instructions() if k == "USER").split(":")[0])
    for workload in k8s_kind("StatefulSet") + k8s_kind("Deployment") + k8s_kind("Job"):
        security = workload["spec"]["template"]["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == uid


# -- every command line against the real CLI ------------------------------------------------


def invocations() -> Iterator[tuple[str, list[str], dict[str, str]]]:
    """``(where, args after the entrypoint, environment)`` of every container command."""
    compose = load_yaml(COMPOSE)
    for name, service in app_services(compose).items():
        command = compose_command(service)
        if command is not None:
            yield f"compose:{name}", command, {**dockerfile_env(), **compose_env(service)}
    for path, doc in k8s_docs():
        spec = doc.get("spec", {}).get("template", {}).get("spec")
        for container in (spec or {}).get("containers", ()):
            assert container["image"].split(":")[0] == "stream-triggers"
            assert "command" not in container, "keep the image's entrypoint"
            yield f"k8s:{path.name}", list(container["args"]), container_env(container)


INVOCATIONS = list(invocations())


def parse(args: list[str]) -> click.Context:
    """Parse ``args`` as ``stream-triggers`` would, down to the leaf command; invoke nothing."""
    ctx = cli.make_context(ENTRYPOINT, list(args))
    while isinstance(ctx.command, click.Group):
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, command, rest = ctx.command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
    return ctx


@pytest.mark.parametrize(("where", "args", "env"), INVOCATIONS, ids=[i[0] for i in INVOCATIONS])
def test_container_commands_parse_with_their_environment(
    where: str, args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        ctx = parse(args)
    except click.ClickException as exc:
        pytest.fail(f"{where}: stream-triggers {' '.join(args)}: {exc.format_message()}")
    if ctx.command.name in ("worker", "executor"):
        assert ctx.params["metrics_port"] is not None, f"{where}: no metrics port, so no probes"
    for module in ctx.params.get("imports", ()):
        assert importlib.util.find_spec(module) is not None, f"{where}: --import {module} is not importable"


def cli_envvars() -> set[str]:
    names: set[str] = set()

    def walk(command: click.Command) -> None:
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            if envvar:
                names.update([envvar] if isinstance(envvar, str) else envvar)
        if isinstance(command, click.Group):
            for sub in command.commands.values():
                walk(sub)

    walk(cli)
    return names


def test_every_stream_triggers_variable_is_a_cli_envvar() -> None:
    known = cli_envvars()
    used: dict[str, str] = {name: "Dockerfile" for name in dockerfile_env() if name.startswith(ENV_PREFIX)}
    for where, _, env in INVOCATIONS:
        used.update({name: where for name in env if name.startswith(ENV_PREFIX) and name not in used})
    used.update({name: "k8s ConfigMap" for name in configmap_env() if name.startswith(ENV_PREFIX)})
    unknown = {name: where for name, where in used.items() if name not in known}
    assert not unknown, f"not read by any CLI option: {unknown}"
    assert {ENV_PREFIX + "BOOTSTRAP", ENV_PREFIX + "STATE_DIR", ENV_PREFIX + "METRICS_PORT"} <= set(used)


# -- Grafana dashboard ----------------------------------------------------------------------


def exported_sample_names() -> set[str]:
    """Sample names (``..._total``, ``..._bucket``, ...) the collectors produce, every family filled."""
    stats = WorkerStats()
    for counts in (
        stats.applied_by_type,
        stats.skipped_by_type,
        stats.dead_letters_by_type,
        stats.dead_letters,
        stats.engine_fallbacks,
    ):
        counts["x"] = 1
    stats.produced.statuses["finished"] = 1
    stats.consumer_lag[0] = 1
    stats.sessions_purged["ttl"] = 1
    stats.live_sessions[0] = 1
    stats.last_event_at = 1.0
    worker = SimpleNamespace(stats=stats, ready=threading.Event())
    task_stats = ExecutorStats()
    task_stats.outcomes["t"] = {"finished": 1}
    task_stats.durations["t"] = Buckets(TASK_SECONDS_BUCKETS)
    task_stats.dead_letters["x"] = 1
    executor = SimpleNamespace(
        stats={"started": 1},
        task_stats=task_stats,
        ready=threading.Event(),
        import_errors={},
        in_flight=lambda: 0,
        waiting=lambda: 0,
    )
    names = set()
    for registry in (worker_registry(worker, process=False), executor_registry(executor, process=False)):
        for family in registry.collect():
            names.update(sample.name for sample in family.samples)
    return names


PROCESS_METRICS = {"process_cpu_seconds_total", "process_resident_memory_bytes"}
_METRIC = re.compile(r"\b((?:stream_triggers|process)_[a-zA-Z0-9_]+)\b")


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        exprs.extend((panel["title"], target["expr"]) for target in panel["targets"])
    return exprs


def test_dashboard_queries_name_only_exported_metrics() -> None:
    exported = exported_sample_names()
    for title, expr in dashboard_exprs():
        names = _METRIC.findall(expr)
        assert names, f"{title}: {expr} uses no stream-triggers metric"
        for name in names:
            known = exported | PROCESS_METRICS
            assert name in known, f"{title}: {name} is not exported by stream_triggers.ops.metrics"
        for opening, closing in ("()", "{}", "[]"):
            assert expr.count(opening) == expr.count(closing), f"{title}: unbalanced {opening}{closing} in {expr}"


def test_dashboard_covers_every_exported_metric() -> None:
    used = {name for _, expr in dashboard_exprs() for name in _METRIC.findall(expr)}
    families = set(WORKER_METRICS) | set(EXECUTOR_METRICS)
    missing = {
        family
        for family in families
        if not any(re.fullmatch(rf"{family}(_total|_bucket|_sum|_count)?", n) for n in used)
    }
    assert not missing, f"metrics with no panel: {sorted(missing)}"


def test_dashboard_process_metrics_exist() -> None:
    registry = CollectorRegistry()
    collector = ProcessCollector(registry=registry)
    names = {sample.name for family in collector.collect() for sample in family.samples}
    if not names:
        pytest.skip("no /proc here")
    assert names >= PROCESS_METRICS


def test_dashboard_uses_its_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    provisioned = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    assert provisioned["datasources"][0]["type"] == "prometheus"


def test_operating_docs_list_every_metric() -> None:
    text = (ROOT / "docs" / "operating.md").read_text(encoding="utf-8")
    for family, (kind, _) in {**WORKER_METRICS, **EXECUTOR_METRICS}.items():
        name = f"{family}_total" if kind == "counter" else family
        assert f"`{name}`" in text, f"docs/operating.md does not describe {name}"
