"""The deployment files are valid, and agree with each other and with the hub.

No container or cluster runs here: each file is checked by the tool that knows its format
(hadolint, check-jsonschema, `haproxy -c`, kubernetes-validate, yamllint, all from the
virtualenv that runs the tests), then the figures that must match across files are compared:
stop times and grace periods, probes and start-up order, Redis persistence, autoscaling
target and capacity, metric names, and what HAProxy logs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from hub.config import Settings
from tests.conftest import NodeFactory
from tests.support import metric_names, required, unmeasured_env, wait_until

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
DASHBOARD = DEPLOY / "grafana" / "hub-dashboard.json"
BIN = Path(sys.executable).parent
# A Kubernetes release kubernetes-validate ships schemas for.
KUBERNETES_VERSION = "1.37.0"

YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
HAPROXY_FILES = sorted(DEPLOY.rglob("*.cfg"))
COMPOSE_GRACE = "10s"
"""compose's `stop_grace_period` where a service sets none."""
KUBERNETES_FILES = sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")

# Every metric of the hub's own, by the name Prometheus sees (histograms without a suffix).
EXPOSED = metric_names()
HUB_METRICS = {name for name in EXPOSED if name.startswith("hub_")}
HISTOGRAMS = {"hub_delivery_latency_seconds", "hub_webhook_attempt_seconds"}


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not in {BIN}: run scripts/install")
    return str(path)


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=ROOT,
        env=unmeasured_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _resource(kind: str, name: str) -> dict[str, Any]:
    for path in KUBERNETES_FILES:
        for doc in _documents(path):
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind} {name} under {KUBERNETES}")


def _hub_container() -> dict[str, Any]:
    containers = _resource("Deployment", "hub")["spec"]["template"]["spec"]["containers"]
    (container,) = (c for c in containers if c["name"] == "hub")
    return dict(container)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def _hub_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return {name: service for name, service in services.items() if "build" in service}


def _stop_seconds(env: dict[str, str]) -> float:
    """How long a node given `env` takes to stop, at least: the longer of its unready time
    and its drain (the unready time is a minimum, not added to the drain)."""
    defaults = Settings.model_fields
    unready = env.get("HUB_UNREADY_SECONDS", defaults["unready_seconds"].default)
    drain = env.get("HUB_DRAIN_SECONDS", defaults["drain_seconds"].default)
    return max(float(unready), float(drain))


# yamllint


@pytest.mark.parametrize("path", [ROOT / ".yamllint", *YAML_FILES], ids=lambda p: p.name)
def test_every_yaml_file_passes_yamllint(path: Path) -> None:
    result = _run(_tool("yamllint"), "--strict", "-c", ".yamllint", "-f", "parsable", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_adapter_rules_embedded_in_their_configmap_pass_yamllint() -> None:
    config = _resource("ConfigMap", "hub-prometheus-adapter")["data"]["config.yaml"]
    result = _run(
        _tool("yamllint"), "--strict", "-c", ".yamllint", "-f", "parsable", "-", stdin=config
    )
    assert result.returncode == 0, result.stdout + result.stderr


# Kubernetes


@pytest.mark.parametrize("path", KUBERNETES_FILES, ids=lambda p: p.name)
def test_every_kubernetes_manifest_validates_strictly(path: Path) -> None:
    result = _run(_tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(path))
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    # A kind without a schema is only a warning to the tool: here it fails.
    assert all(line.startswith("INFO ") and " passed " in line for line in lines), result.stdout
    assert len(lines) == len(_documents(path))


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in KUBERNETES_FILES]


def test_the_manifests_hold_the_resources_the_hub_needs() -> None:
    kinds = {
        (doc["kind"], doc["apiVersion"]) for path in KUBERNETES_FILES for doc in _documents(path)
    }
    assert kinds >= {
        ("Namespace", "v1"),
        ("Secret", "v1"),
        ("Deployment", "apps/v1"),
        ("Service", "v1"),
        ("PodDisruptionBudget", "policy/v1"),
        ("HorizontalPodAutoscaler", "autoscaling/v2"),
        ("ConfigMap", "v1"),
        ("PersistentVolumeClaim", "v1"),
    }


def test_the_grace_period_covers_the_pre_stop_sleep_and_the_drain() -> None:
    pod = _resource("Deployment", "hub")["spec"]["template"]["spec"]
    container = _hub_container()
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = int(command[1])
    # The grace period runs from the preStop hook on, SIGTERM comes after it.
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + _stop_seconds(_env(container)) + 10
    # A load balancer following the readiness probe sees the node leave before it stops.
    probe = container["readinessProbe"]
    seen_within = probe["periodSeconds"] * probe["failureThreshold"]
    assert pre_stop + float(_env(container)["HUB_UNREADY_SECONDS"]) >= seen_within


def test_kubernetes_redis_appends_every_write_to_a_file_on_a_persistent_volume() -> None:
    redis = _resource("Deployment", "redis")["spec"]
    assert redis["replicas"] == 1
    assert redis["strategy"]["type"] == "Recreate"  # never two pods on one volume
    pod = redis["template"]["spec"]
    (container,) = pod["containers"]
    assert _redis_persistence(container["args"]) == {"appendonly": "yes", "appendfsync": "everysec"}
    (data,) = (m for m in container["volumeMounts"] if m["mountPath"] == "/data")
    (volume,) = (v for v in pod["volumes"] if v["name"] == data["name"])
    claim = _resource("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert _is_pong_check(" ".join(container["readinessProbe"]["exec"]["command"]))


def _redis_persistence(args: list[str]) -> dict[str, str]:
    """The `--appendonly` and `--appendfsync` of redis-server's arguments."""
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    return {name: pairs.get(f"--{name}", "") for name in ("appendonly", "appendfsync")}


def _is_pong_check(command: str) -> bool:
    """Whether a Redis health check wants PONG: redis-cli exits 0 on the LOADING error that
    Redis answers while it reads its file back."""
    return "redis-cli ping" in command and "grep -q PONG" in command


def test_readiness_is_readyz_and_liveness_is_healthz_on_the_hub_port() -> None:
    container = _hub_container()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["http"] == 8000
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"]["path"] == path
        assert container[probe]["httpGet"]["port"] in ("http", 8000)


def test_each_pod_is_a_node_named_after_itself_and_scraped_on_the_metrics_port() -> None:
    template = _resource("Deployment", "hub")["spec"]["template"]
    container = _hub_container()
    (node_id,) = (item for item in container["env"] if item["name"] == "HUB_NODE_ID")
    assert node_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    secrets = {
        item["name"] for item in container["env"] if "secretKeyRef" in item.get("valueFrom", {})
    }
    assert "HUB_JWT_SECRET" in secrets
    metrics_port = _env(container)["HUB_METRICS_PORT"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == metrics_port
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(metrics_port) in {port["containerPort"] for port in container["ports"]}


def test_the_pods_get_no_service_variables_named_like_settings() -> None:
    # The Service is called hub: its links would be HUB_PORT, HUB_SERVICE_HOST, ...
    assert _resource("Deployment", "hub")["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_the_hub_runs_unprivileged_on_a_read_only_root() -> None:
    pod = _resource("Deployment", "hub")["spec"]["template"]["spec"]
    security = _hub_container()["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_the_service_and_the_disruption_budget_select_the_hub_pods() -> None:
    labels = _resource("Deployment", "hub")["spec"]["template"]["metadata"]["labels"]
    service = _resource("Service", "hub")["spec"]
    budget = _resource("PodDisruptionBudget", "hub")["spec"]
    assert service["selector"].items() <= labels.items()
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["maxUnavailable"] == 1
    assert service["sessionAffinity"] == "None"
    assert [port["port"] for port in service["ports"]] == [8000]


def test_the_autoscaler_targets_hub_connections_per_pod_and_cpu() -> None:
    spec = _resource("HorizontalPodAutoscaler", "hub")["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hub"}
    metrics = {metric["type"]: metric for metric in spec["metrics"]}
    pods = metrics["Pods"]["pods"]
    assert pods["metric"]["name"] == "hub_connections"
    assert pods["target"]["type"] == "AverageValue"
    capacity = int(_env(_hub_container())["HUB_MAX_CONNECTIONS"])
    assert int(pods["target"]["averageValue"]) == capacity * 3 // 4
    cpu = metrics["Resource"]["resource"]
    assert cpu["name"] == "cpu"
    assert cpu["target"]["type"] == "Utilization"
    assert spec["minReplicas"] >= 3
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300


def test_the_adapter_serves_hub_connections_summed_over_roles_per_pod() -> None:
    config = yaml.safe_load(_resource("ConfigMap", "hub-prometheus-adapter")["data"]["config.yaml"])
    (rule,) = (r for r in config["rules"] if r["name"]["as"] == "hub_connections")
    assert rule["seriesQuery"].startswith("hub_connections{")
    overrides = rule["resources"]["overrides"]
    assert {label: o["resource"] for label, o in overrides.items()} == {
        "namespace": "namespace",
        "pod": "pod",
    }
    assert re.fullmatch(
        r"sum\(<<\.Series>>\{<<\.LabelMatchers>>\}\) by \(<<\.GroupBy>>\)", rule["metricsQuery"]
    )


# Compose and HAProxy


def test_compose_follows_the_compose_specification() -> None:
    result = _run(
        _tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.compose-spec",
        str(DEPLOY / "compose.yaml"),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_three_nodes_each_named_after_its_service() -> None:
    services = _hub_services()
    assert sorted(services) == ["hub-a", "hub-b", "hub-c"]
    for name, service in services.items():
        env = service["environment"]
        assert env["HUB_NODE_ID"] == name
        assert env["HUB_REDIS_URL"].startswith("redis://redis:")
        assert env["HUB_FORWARDED_ALLOW_IPS"]
        # No default: a published secret would let anyone mint admin tokens.
        assert env["HUB_JWT_SECRET"].startswith("${HUB_JWT_SECRET:?")
        assert _seconds(service["stop_grace_period"]) >= _stop_seconds(env) + 10


def test_compose_starts_nodes_on_a_redis_that_answers_and_haproxy_on_ready_nodes() -> None:
    services = _compose()["services"]
    assert _is_pong_check(" ".join(services["redis"]["healthcheck"]["test"]))
    for service in _hub_services().values():
        assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
    waits_for = services["haproxy"]["depends_on"]
    assert waits_for == {name: {"condition": "service_healthy"} for name in _hub_services()}


def test_the_compose_node_health_check_runs_on_the_images_python_and_wants_readyz(
    hub_node: NodeFactory,
) -> None:
    # The image is python:*-slim with hub's virtualenv first on PATH: no curl, no wget.
    (check,) = {tuple(service["healthcheck"]["test"]) for service in _hub_services().values()}
    assert check[:3] == ("CMD", "python", "-c")
    node = hub_node("checked", unready_seconds=60)

    def passes() -> bool:
        code = check[3].replace("127.0.0.1:8000", f"127.0.0.1:{node.port}")
        assert code != check[3]
        return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0

    assert passes()
    node.signal(signal.SIGTERM)  # unready for a minute; the fixture's SIGTERM ends it
    wait_until(lambda: node.get("/readyz").status_code == 503, 5, "readyz to turn 503")
    assert node.get("/healthz").status_code == 200
    assert not passes()


def test_compose_redis_appends_every_write_to_a_file_on_a_named_volume() -> None:
    compose = _compose()
    redis = compose["services"]["redis"]
    assert _redis_persistence(redis["command"][1:]) == {
        "appendonly": "yes",
        "appendfsync": "everysec",
    }
    (volume,) = (mount.split(":")[0] for mount in redis["volumes"] if mount.endswith(":/data"))
    assert volume in compose["volumes"]


def test_haproxy_stops_within_its_compose_grace_period() -> None:
    hard_stop = _hard_stop_after((DEPLOY / "haproxy.cfg").read_text())
    haproxy = _compose()["services"]["haproxy"]
    assert hard_stop + 5 <= _seconds(haproxy.get("stop_grace_period", COMPOSE_GRACE))


def _hard_stop_after(config: str) -> float:
    found = re.findall(r"^\s*hard-stop-after\s+(\d+)s\s*$", config, re.MULTILINE)
    assert len(found) == 1, "hard-stop-after, in seconds, in global"
    return float(found[0])


@pytest.mark.parametrize("path", HAPROXY_FILES, ids=lambda p: p.name)
def test_every_haproxy_file_bounds_its_soft_stop_and_logs_paths_without_query(
    path: Path,
) -> None:
    config = path.read_text()
    assert _hard_stop_after(config) > 0
    assert not re.search(r"^\s*option\s+(httplog|httpslog)\b", config, re.MULTILINE)
    (log_format,) = re.findall(r"^\s*log-format\s+(.*)$", config, re.MULTILINE)
    # The request line (%r), the URI (%HU) and the query (%HQ) all carry `?token=...`.
    assert not re.search(r"%(\{[^}]*\})?(r|HU|HQ)\b", log_format), log_format
    assert "%HPO" in log_format or "%HP " in log_format or "%[path]" in log_format


def _seconds(duration: str) -> float:
    """A compose duration (`1m30s`) in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert duration
    assert parts is not None, duration
    hours, minutes, seconds = (int(part or 0) for part in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


def test_haproxy_accepts_its_configuration() -> None:
    result = _run(required("haproxy"), "-c", "-f", str(DEPLOY / "haproxy.cfg"))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Configuration file is valid" in output
    # The compose service names do not resolve here; nothing else may be wrong.
    warnings = [line for line in output.splitlines() if "[WARNING]" in line]
    assert all("could not resolve address" in line for line in warnings), output


def test_haproxy_balances_over_every_compose_node_and_checks_readyz() -> None:
    config = (DEPLOY / "haproxy.cfg").read_text()
    servers = re.findall(r"^\s*server\s+(\S+)\s+(\S+)", config, re.MULTILINE)
    assert sorted(servers) == [(name, f"{name}:8000") for name in sorted(_hub_services())]
    assert re.search(r"^\s*balance\s+leastconn\b", config, re.MULTILINE)
    assert re.search(r"^\s*http-check\s+send\s+meth\s+GET\s+uri\s+/readyz\b", config, re.MULTILINE)
    assert re.search(r"^\s*option\s+forwardfor\b", config, re.MULTILINE)
    assert re.search(r"^\s*timeout\s+tunnel\s+\d+[hm]\b", config, re.MULTILINE)
    haproxy = _compose()["services"]["haproxy"]
    assert re.fullmatch(r"haproxy:\d+\.\d+\.\d+(-\S+)?", haproxy["image"])
    assert any(port.endswith(":8000:8000") or port == "8000:8000" for port in haproxy["ports"])


def test_every_setting_the_deployment_files_set_is_a_hub_setting() -> None:
    known = {f"HUB_{name.upper()}" for name in Settings.model_fields}
    used = {item["name"] for item in _hub_container()["env"]}
    for service in _hub_services().values():
        used |= set(service["environment"])
    assert used <= known, used - known


def test_every_third_party_image_is_pinned_to_a_release() -> None:
    images = [service["image"] for service in _compose()["services"].values() if "image" in service]
    for path in KUBERNETES_FILES:
        for doc in _documents(path):
            if doc["kind"] == "Deployment" and doc["metadata"]["name"] != "hub":
                images += [c["image"] for c in doc["spec"]["template"]["spec"]["containers"]]
    assert images
    for image in images:
        assert re.fullmatch(r"[a-z0-9./-]+:\d+\.\d+\.\d+(-[a-z0-9.]+)*", image), image


# Dockerfile


def test_the_dockerfile_is_hadolint_clean(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            _tool("hadolint"),
            "--disable-ignore-pragma",
            "--failure-threshold",
            "style",
            "--format",
            "json",
            "Dockerfile",
        ],
        cwd=ROOT,
        # No user configuration may relax the rules.
        env={**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []


def test_the_image_runs_hub_serve_as_a_numeric_non_root_user() -> None:
    lines = _dockerfile_instructions()
    froms = [args for op, args in lines if op == "FROM"]
    assert len(froms) >= 2, "a build stage and a runtime stage"
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)? AS base", froms[0])
    last = {op: args for op, args in lines}
    assert last["USER"] == "10001:10001"
    assert last["STOPSIGNAL"] == "SIGTERM"
    assert set(last["EXPOSE"].split()) == {"8000", "9100"}
    assert "/healthz" in last["HEALTHCHECK"]
    assert json.loads(last["ENTRYPOINT"]) == ["hub"]
    assert json.loads(last["CMD"]) == ["serve", "--host", "0.0.0.0", "--port", "8000"]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    return [
        (op.upper(), args.strip())
        for op, args in re.findall(r"^([A-Za-z]+)\s+(.*)$", text, re.MULTILINE)
    ]


# Grafana


def _queries(node: Any) -> Iterator[str]:
    """Every PromQL expression of a dashboard: panel targets and template variables."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition", "query") and isinstance(value, str):
                yield value
            else:
                yield from _queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _queries(item)


def _metric_names(expression: str) -> set[str]:
    names: set[str] = set()
    for name in re.findall(r"\b(?:hub|process)_[a-z0-9_]+", expression):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        names.add(base if base in HISTOGRAMS else name)
    return names


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def _queried_metrics() -> set[str]:
    queried: set[str] = set()
    for query in _queries(_dashboard()):
        queried |= _metric_names(query)
    return queried


def test_the_dashboard_queries_only_metrics_the_hub_exposes() -> None:
    queried = _queried_metrics()
    assert queried <= EXPOSED, queried - EXPOSED


def test_the_dashboard_shows_every_metric_the_hub_exposes() -> None:
    queried = _queried_metrics()
    assert queried >= HUB_METRICS, HUB_METRICS - queried


def test_the_dashboard_takes_its_datasource_from_a_template_variable() -> None:
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        for holder in (panel, *panel["targets"]):
            assert holder["datasource"]["uid"] == "${datasource}", panel["title"]


# Alert rules

RULES = DEPLOY / "prometheus" / "hub-rules.yaml"
ALERTS = {
    "HubBrokerDown",
    "HubNodeDeaf",
    "HubSlowConsumersRising",
    "HubHeartbeatBacklogDrops",
    "HubCapacityHigh",
    "HubDeliveryLatencyHigh",
    "HubNodesFlapping",
    "HubDevicesGoingOffline",
    "HubWebhookBacklogGrowing",
}


def _rules(path: Path) -> list[dict[str, Any]]:
    document = yaml.safe_load(path.read_text())
    groups = document["spec"]["groups"] if "spec" in document else document["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_alert_rule_passes_its_promtool_unit_test() -> None:
    promtool = required("promtool", "prometheus")
    checked = _run(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _run(promtool, "test", "rules", str(RULES.with_name("hub-rules.test.yaml")))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_rule_has_a_unit_test_and_queries_metrics_the_hub_exposes() -> None:
    rules = _rules(RULES)
    assert {rule["alert"] for rule in rules} == ALERTS
    tests = yaml.safe_load(RULES.with_name("hub-rules.test.yaml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    assert tested == ALERTS
    for rule in rules:
        assert _metric_names(rule["expr"]) <= EXPOSED, rule["alert"]


def test_the_prometheus_operator_gets_the_same_rules() -> None:
    assert _rules(DEPLOY / "prometheus" / "hub-prometheusrule.yaml") == _rules(RULES)
