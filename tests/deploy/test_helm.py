"""Helm chart: linted and rendered by the real Helm engine (helm-python-sdk
embeds Helm v4), every object validated against the Kubernetes API schemas,
and the WebSocket-specific guarantees asserted on the rendered objects."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.deploy.tools import CHART, require_module

pytestmark = pytest.mark.deploy

PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
# Kubernetes versions whose API schemas every rendered object must satisfy:
# the oldest one the chart's preStop `sleep` action needs, and the newest known.
KUBE_VERSIONS = ("1.30.0", "latest")
# Kinds from CRDs, absent from the core API schemas; checked field by field below.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

Render = Callable[..., list[dict[str, Any]]]


def production_values() -> dict[str, Any]:
    return yaml.safe_load(PRODUCTION_VALUES.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def helm() -> Any:
    return require_module("helm_python")


@pytest.fixture(scope="module")
def chart(helm: Any) -> Any:
    with helm.Chart.load(str(CHART)) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def render(chart: Any) -> Render:
    """Render like `helm template`, returning the Kubernetes objects."""

    def _render(values: dict[str, Any] | None = None, **options: Any) -> list[dict[str, Any]]:
        options.setdefault("name", "chat")
        options.setdefault("namespace", "tornchat")
        options.setdefault("is_install", True)
        manifests = chart.render(values or {}, **options)
        objects = []
        for path, text in sorted(manifests.items()):
            if path.endswith("NOTES.txt"):
                continue
            objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
        return objects

    return _render


def one(objects: list[dict[str, Any]], kind: str, component: str | None = None) -> dict[str, Any]:
    found = [
        o
        for o in objects
        if o["kind"] == kind
        and (
            component is None
            or o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        )
    ]
    assert len(found) == 1, f"expected one {kind} ({component}), got {len(found)}"
    return found[0]


def server_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]


# --- lint, render, API schemas --------------------------------------------------------------


@pytest.mark.parametrize("values_name", ["default", "production"])
# Lint checks the rendered API versions for deprecations against each release.
@pytest.mark.parametrize("kube_version", ["v1.29.0", "v1.34.0"])
def test_helm_lint_strict_is_clean(helm: Any, values_name: str, kube_version: str) -> None:
    values = production_values() if values_name == "production" else None
    report = helm.lint(
        str(CHART), values, strict=True, namespace="tornchat", kube_version=kube_version
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("values_name", ["default", "production"])
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_object_is_valid_kubernetes(
    render: Render, values_name: str, kube_version: str
) -> None:
    kubernetes_validate = require_module("kubernetes_validate")
    if kube_version == "latest":
        kube_version = kubernetes_validate.latest_version()
    values = production_values() if values_name == "production" else None
    objects = render(values)
    assert objects
    checked = set()
    for obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        if key in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {error}")
        checked.add(obj["kind"])
    expected = {"ConfigMap", "Secret", "Deployment", "Service", "ServiceAccount", "Pod"}
    expected.add("PodDisruptionBudget")
    if values_name == "production":
        expected |= {"HorizontalPodAutoscaler", "Ingress", "Job"}
    assert expected <= checked


def test_default_install_needs_nothing_else(render: Render) -> None:
    objects = render()
    kinds = sorted(o["kind"] for o in objects)
    assert "Job" not in kinds, "no database URL: the server migrates its SQLite file itself"
    assert "Ingress" not in kinds and "HorizontalPodAutoscaler" not in kinds
    assert one(objects, "Deployment")["spec"]["replicas"] == 1
    container = server_container(objects)
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/tornchat"} <= mounts, "SQLite needs a writable working dir"
    secret = one(objects, "Secret")
    generated = base64.b64decode(secret["data"]["ACCESS_TOKEN_SECRET"])
    assert len(generated) >= 32, "a generated ACCESS_TOKEN_SECRET satisfies production mode"


# --- the server pod -------------------------------------------------------------------------


@pytest.mark.parametrize("processes", [1, 4])
def test_processes_come_from_values(render: Render, processes: int) -> None:
    values = production_values()
    values["server"]["processes"] = processes
    args = server_container(render(values))["args"]
    assert args[0] == "serve"
    assert args[args.index("--processes") + 1] == str(processes)


def test_probes_hit_health_on_the_health_port(render: Render) -> None:
    container = server_container(render(production_values()))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    # a flood on the chat port can hold new connections there back for seconds
    assert ports == {"http": 4004, "health": 4005}
    assert one(render(), "ConfigMap")["data"]["TORNCHAT_HEALTH_PORT"] == "4005"
    for probe in ("readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "health"}, probe
    # A database outage must not restart every pod: liveness asks no dependency
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "health"}
    liveness, readiness = container["livenessProbe"], container["readinessProbe"]
    tolerated = liveness["periodSeconds"] * liveness["failureThreshold"]
    assert tolerated > readiness["periodSeconds"] * readiness["failureThreshold"]


def test_without_a_health_port_the_probes_go_to_the_http_port(render: Render) -> None:
    probes = {name: {"httpGet": {"path": "/health", "port": "http"}}
              for name in ("readinessProbe", "startupProbe", "livenessProbe")}
    objects = render({"server": {"healthPort": 0}, **probes,
                      "metrics": {"serviceMonitor": {"enabled": True}}})
    container = server_container(objects)
    assert [p["name"] for p in container["ports"]] == ["http"]
    assert [p["name"] for p in one(objects, "Service", "server")["spec"]["ports"]] == ["http"]
    monitor = one(objects, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert (monitor["spec"]["selector"]["matchLabels"].items()
            <= one(objects, "Service", "server")["metadata"]["labels"].items())
    assert [o["kind"] for o in objects].count("Service") == 1
    assert one(objects, "ConfigMap")["data"]["TORNCHAT_HEALTH_PORT"] == "0"


@pytest.mark.parametrize(("values", "message"), [
    ({"server": {"healthPort": 0}}, r"set \w+Probe.httpGet.port to http"),
    ({"server": {"healthPort": 4004}}, "must differ from server.port"),
])
def test_a_health_port_that_cannot_work_is_refused(
    render: Render, helm: Any, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(values)


@pytest.mark.parametrize("values_name", ["default", "production"])
def test_grace_period_exceeds_pause_plus_drain(render: Render, values_name: str) -> None:
    objects = render(production_values() if values_name == "production" else None)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    pause = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = int(one(objects, "ConfigMap")["data"]["TORNCHAT_SHUTDOWN_TIMEOUT"])
    assert pause > 0
    assert pod["terminationGracePeriodSeconds"] > pause + drain


def test_grace_period_too_short_is_refused(render: Render, helm: Any) -> None:
    values = {
        "server": {
            "preStopSleepSeconds": 10,
            "shutdownTimeoutSeconds": 10,
            "terminationGracePeriodSeconds": 20,
        }
    }
    with pytest.raises(helm.HelmError, match="terminationGracePeriodSeconds"):
        render(values)


def test_restricted_security_context(render: Render) -> None:
    objects = render(production_values())
    pods = [one(objects, "Deployment")["spec"]["template"]["spec"]]
    pods.append(one(objects, "Job")["spec"]["template"]["spec"])
    pods.append(one(objects, "Pod")["spec"])
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            if container["name"] != "healthcheck":
                assert tmp, f"{container['name']} needs a writable /tmp"
    volumes = {v["name"]: v for v in pods[0]["volumes"]}
    assert "emptyDir" in volumes["tmp"]


def test_config_checksum_rolls_the_pods(render: Render) -> None:
    values = production_values()
    objects = render(values)
    annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    configmap = one(objects, "ConfigMap")
    before = annotations["checksum/config"]
    assert len(before) == 64
    values["config"]["logLevel"] = "debug"
    changed = one(render(values), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert changed["checksum/config"] != before
    values["secret"]["redisUrl"] = "redis://other:6379/0"
    assert (
        one(render(values), "Deployment")["spec"]["template"]["metadata"]["annotations"][
            "checksum/secret"
        ]
        != annotations["checksum/secret"]
    )
    assert configmap["data"]["LOG_LEVEL"] == "info"


# --- configuration and secrets ----------------------------------------------------------------


def test_secret_values_never_reach_the_configmap(render: Render) -> None:
    values = production_values()
    objects = render(values)
    secrets = [v for v in values["secret"].values() if v]
    assert len(secrets) == 3
    configmap_text = json.dumps(one(objects, "ConfigMap"))
    deployment_text = json.dumps(one(objects, "Deployment"))
    for secret in secrets:
        assert secret not in configmap_text
        assert secret not in deployment_text
    # Every credential in the CI values file (passwords inside URLs too) is marked.
    assert "ci-only" not in configmap_text
    assert "ci-only" not in deployment_text
    stored = {
        key: base64.b64decode(value).decode()
        for key, value in one(objects, "Secret", "server")["data"].items()
    }
    assert stored == {
        "ACCESS_TOKEN_SECRET": values["secret"]["accessTokenSecret"],
        "DATABASE_URL": values["secret"]["databaseUrl"],
        "REDIS_URL": values["secret"]["redisUrl"],
    }
    configmap = one(objects, "ConfigMap")["data"]
    assert not {"ACCESS_TOKEN_SECRET", "DATABASE_URL", "REDIS_URL"} & set(configmap)
    assert configmap["KAFKA_BROKER"] == values["config"]["kafkaBroker"]
    assert configmap["PORT"] == "4004"
    env_from = server_container(objects)["envFrom"]
    assert {"configMapRef": {"name": "chat-tornchat"}} in env_from
    assert {"secretRef": {"name": "chat-tornchat"}} in env_from


def test_existing_secret_replaces_the_chart_secret(render: Render) -> None:
    values = production_values()
    del values["secret"]
    values["existingSecret"] = "tornchat-credentials"
    objects = render(values)
    assert not [o for o in objects if o["kind"] == "Secret"]
    assert {"secretRef": {"name": "tornchat-credentials"}} in server_container(objects)["envFrom"]
    job = one(objects, "Job")["spec"]["template"]["spec"]["containers"][0]
    assert job["envFrom"] == [{"secretRef": {"name": "tornchat-credentials"}}]


def test_migration_job_is_a_hook_with_its_secret_first(render: Render) -> None:
    objects = render(production_values())
    job = one(objects, "Job")
    hooks = job["metadata"]["annotations"]
    assert set(hooks["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # Hooks run before the release's own Secret exists: the Job reads a hook
    # Secret created earlier (lower weight) in the same hook phase.
    secret_name = container["envFrom"][0]["secretRef"]["name"]
    hook_secret = next(
        o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == secret_name
    )
    secret_hooks = hook_secret["metadata"]["annotations"]
    assert secret_hooks["helm.sh/hook"] == hooks["helm.sh/hook"]
    assert int(secret_hooks["helm.sh/hook-weight"]) < int(hooks["helm.sh/hook-weight"])
    assert "DATABASE_URL" in hook_secret["data"]


def test_selectors_pick_only_server_pods(render: Render) -> None:
    objects = render(production_values())
    selector = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert one(objects, "Service", "server")["spec"]["selector"] == selector
    assert one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    # Migration and test pods must never receive Service traffic.
    for other in (
        one(objects, "Job")["spec"]["template"]["metadata"]["labels"],
        one(objects, "Pod")["metadata"]["labels"],
    ):
        assert not selector.items() <= other.items()


def test_autoscaling_owns_the_replica_count(render: Render) -> None:
    objects = render(production_values())
    deployment = one(objects, "Deployment")
    assert "replicas" not in deployment["spec"]
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_ingress_keeps_websockets_open(render: Render) -> None:
    objects = render(production_values())
    ingress = one(objects, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "chat-tornchat", "port": {"name": "http"}}


def test_service_monitor_scrapes_metrics(render: Render) -> None:
    objects = render(production_values())
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "health"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # the health port has a ClusterIP Service of its own, whatever the main one's type
    service = one(objects, "Service", "health")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "health", "port": 4005, "targetPort": "health",
                                         "protocol": "TCP"}]
    assert service["spec"]["selector"] == one(objects, "Service", "server")["spec"]["selector"]
    assert "health" not in [p["name"] for p in one(objects, "Service", "server")["spec"]["ports"]]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert not [o for o in render() if o["kind"] == "ServiceMonitor"], "off by default"


def test_helm_test_pod_probes_the_service(render: Render) -> None:
    objects = render()
    pod = one(objects, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    args = pod["spec"]["containers"][0]["args"]
    assert args[:2] == ["healthcheck", "--url"]
    assert args[2] == "http://chat-tornchat:4004/health"


def test_notes_explain_how_to_connect(chart: Any) -> None:
    notes = chart.render({}, name="chat", namespace="tornchat")["tornchat/templates/NOTES.txt"]
    assert "/api/v1/chat" in notes
    assert "helm test chat" in notes
    assert "SQLite" in notes


# --- values.schema.json ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"replicaCount": "three"},
        {"replicaCount": -1},
        {"server": {"processes": "many"}},
        {"server": {"port": 70000}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"config": {"logLevel": "loud"}},
        {"secret": {"accessTokenSecret": "too-short"}},
        {"secret": {"databaseUrl": "mysql://db/chat"}},
        {"secret": {"databaseUrl": "postgresql+psycopg2://db/chat"}},
        {"secret": {"apiKey": "too-short"}},
        {"server": {"processes": 0}},
        {"service": {"type": "Headless"}},
        {"replicaCuont": 3},
    ],
    ids=lambda bad: json.dumps(bad, sort_keys=True),
)
def test_schema_rejects_bad_values(chart: Any, helm: Any, bad: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(bad)
    with pytest.raises(helm.HelmError):
        chart.render(bad, name="chat", namespace="tornchat")


def test_schema_accepts_documented_values(chart: Any) -> None:
    chart.validate_schema({})
    chart.validate_schema(production_values())
    chart.validate_schema({"secret": {"redisUrl": "redis+cluster://10.0.0.5:7000/",
                                      "apiKey": "k" * 32}})


def test_the_server_api_key_comes_from_the_secret(render: Render) -> None:
    values = production_values()
    values["secret"]["apiKey"] = "k" * 40
    objects = render(values)
    secret = next(o for o in objects if o["kind"] == "Secret"
                  and o["metadata"]["name"] == "chat-tornchat")
    assert base64.b64decode(secret["data"]["TORNCHAT_API_KEY"]) == b"k" * 40
    assert "TORNCHAT_API_KEY" not in one(objects, "ConfigMap")["data"]


def test_an_existing_secret_must_hold_redis_when_scaled(render: Render) -> None:
    values = production_values()
    del values["secret"]
    values["existingSecret"] = "tornchat-credentials"
    values["replicaCount"] = 3
    env = server_container(render(values))["env"]
    assert env == [{"name": "REDIS_URL", "valueFrom": {"secretKeyRef": {
        "name": "tornchat-credentials", "key": "REDIS_URL", "optional": False}}}]
    values["config"]["extraEnv"]["REDIS_URL"] = "redis://redis:6379/0"  # given elsewhere
    assert "env" not in server_container(render(values))
    del values["config"]["extraEnv"]["REDIS_URL"]
    values["replicaCount"], values["server"]["processes"] = 1, 1
    values["autoscaling"]["enabled"] = False
    assert "env" not in server_container(render(values))  # one process needs no Redis


def test_the_migration_job_reads_no_redis(render: Render) -> None:
    job = one(render(production_values()), "Job")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "REDIS_URL", "value": ""} in job["env"]


def test_several_processes_need_the_supervisors_two_extra_seconds(render: Render,
                                                                 helm: Any) -> None:
    values = production_values()
    values["server"].update(processes=2, preStopSleepSeconds=5, shutdownTimeoutSeconds=10,
                            terminationGracePeriodSeconds=16)
    with pytest.raises(helm.HelmError, match=r"\+ 2 with several processes"):
        render(values)
    values["server"]["terminationGracePeriodSeconds"] = 18
    render(values)


def test_values_are_camel_case_and_commented() -> None:
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    values = yaml.safe_load(text)

    def keys(node: Any) -> list[str]:
        if not isinstance(node, dict):
            return []
        return [k for key, child in node.items() for k in (key, *keys(child))]

    for key in keys(values):
        assert "_" not in key and "-" not in key and key[0].islower(), key
    comments = sum(1 for line in text.splitlines() if line.strip().startswith("#"))
    assert comments >= len(values), "every top-level value is documented"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 3}, "shared database"),
        ({"server": {"processes": 2}}, "shared database"),
        (
            {"replicaCount": 3, "secret": {"databaseUrl": "postgresql://u:p@db:5432/chat"}},
            "Redis",
        ),
    ],
)
def test_unsafe_scaling_is_refused(
    render: Render, helm: Any, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(values)


def test_config_checksum_matches_the_rendered_configmap(chart: Any) -> None:
    manifests = chart.render(production_values(), name="chat", namespace="tornchat")
    configmap_text = manifests["tornchat/templates/configmap.yaml"]
    deployment = yaml.safe_load(manifests["tornchat/templates/deployment.yaml"])
    annotation = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert annotation == hashlib.sha256(configmap_text.encode()).hexdigest()
