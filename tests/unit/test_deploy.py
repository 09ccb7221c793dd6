"""The deployment files under deploy/: systemd unit, container image, Kubernetes manifests,
Prometheus alerts and the Grafana dashboard, checked offline against the daemon they deploy."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import promql_parser
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

from fleetstream.cli import main
from fleetstream.config.loader import load_config, parse_config
from fleetstream.consumers import amqp, kafka
from fleetstream.telemetry.metrics import Telemetry

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "fleetstream.service"
ENV_EXAMPLE = DEPLOY / "systemd" / "fleetstream.env.example"
DOCKERFILE = DEPLOY / "container" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "container" / "Dockerfile.dockerignore"
K8S = DEPLOY / "kubernetes"
KUSTOMIZATION = K8S / "kustomization.yaml"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p != KUSTOMIZATION)
NOT_IN_KUSTOMIZATION = {"secret.example.yaml", "servicemonitor.yaml"}
DASHBOARD = DEPLOY / "grafana" / "fleetstream.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))

KUBERNETES_VERSIONS = ("1.28.0", "1.37.0")
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
METRIC = re.compile(r"fleetstream_[a-z_]+")
ASSIGNMENT = re.compile(r"^#?([A-Z][A-Z0-9_]*)=(.*)$")
# Sample names a metric family of each type exposes (prometheus_client text format).
SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
# What the dashboard must show, per the issue that asked for it.
DASHBOARD_METRICS = {
    "fleetstream_messages_received_total",
    "fleetstream_events_decoded_total",
    "fleetstream_events_written_total",
    "fleetstream_duplicates_dropped_total",
    "fleetstream_quarantined_total",
    "fleetstream_decode_errors_total",
    "fleetstream_sink_write_seconds_bucket",
    "fleetstream_in_flight_messages",
    "fleetstream_last_message_age_seconds",
    "fleetstream_kafka_consumer_lag",
    "fleetstream_kafka_paused",
    "fleetstream_kafka_rebalances_total",
    "fleetstream_amqp_consuming",
    "fleetstream_amqp_queue_idle_seconds",
    "fleetstream_amqp_reconnects_total",
    "fleetstream_http_responses_total",
}
GRAFANA_MACROS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


# Helpers ------------------------------------------------------------------------------------


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read(UNIT, encoding="utf-8")
    return parser


def _unit_environment() -> dict[str, str]:
    words = shlex.split(_unit().get("Service", "Environment", fallback=""))
    return dict(word.split("=", 1) for word in words)


def _seconds(timespan: str) -> float:
    """A systemd time span such as `45`, `45s`, `1min 30s` in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", timespan):
        total += float(number) * units[unit]
    return total


def _env_example() -> dict[str, tuple[str, bool]]:
    """Variables of the env example: name -> (value, set), `set` False for commented lines."""
    found = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = ASSIGNMENT.match(line.strip())
        if match:
            found[match.group(1)] = (match.group(2), not line.startswith("#"))
    return found


def _systemd_environment() -> dict[str, str]:
    """What the unit gives the daemon: the env example's active lines and its Environment=."""
    environment = {k: v for k, (v, active) in _env_example().items() if active}
    environment.update(_unit_environment())
    return environment


def _pod_environment() -> dict[str, str]:
    """What the pod gives the daemon: the example Secret's keys and the container's env."""
    objects = _manifests()
    environment = dict(objects["Secret"]["stringData"])
    environment.update({e["name"]: e["value"] for e in _container(objects["Deployment"])["env"]})
    return environment


def _variables(text: str) -> set[str]:
    return {name for name, _ in VARIABLE.findall(text)}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object under deploy/kubernetes by kind (one of each kind)."""
    objects: dict[str, dict[str, Any]] = {}
    for path in MANIFESTS:
        for document in _documents(path):
            assert document["kind"] not in objects, f"second {document['kind']} in {path}"
            objects[document["kind"]] = document
    return objects


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert 1 == len(containers)
    return dict(containers[0])


def _configmap_config() -> str:
    return str(_manifests()["ConfigMap"]["data"]["fleetstream.yaml"])


def _use_environment(monkeypatch: pytest.MonkeyPatch, text: str, values: dict[str, str]) -> None:
    """Clear every variable `text` references, then set `values`."""
    for name in _variables(text):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def _exported_metrics(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Sample names the daemon can expose on /metrics: its own metrics plus those of the Kafka
    and AMQP sources, derived from each family's type, plus every sample present."""
    # The sources cache their metric sets by id(registry); a registry freed by an earlier test
    # can leave its id to ours, so start from empty caches.
    monkeypatch.setattr(kafka, "_METRICS", {})
    monkeypatch.setattr(amqp, "_METRICS", {})
    telemetry = Telemetry()
    telemetry.register_source("source")
    telemetry.register_sink("sink")
    kafka._metrics(telemetry)
    amqp._metrics(telemetry)
    names = set()
    for family in telemetry.registry.collect():
        names |= {family.name + suffix for suffix in SAMPLE_SUFFIXES.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def _dashboard_expressions() -> list[str]:
    dashboard = _dashboard()
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(<series selector>, <label>): the selector is PromQL.
            inner = variable["query"]["query"][len("label_values(") : -1]
            expressions.append(inner.rsplit(",", 1)[0])
    return expressions


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


# systemd ------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_unit_passes_systemd_analyze_verify() -> None:
    """systemd-analyze verify finds nothing but, if not installed, the missing ExecStart."""
    executable = _unit().get("Service", "ExecStart").split()[0]
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    missing = f"fleetstream.service: Command {executable} is not executable"
    lines = (result.stdout + result.stderr).splitlines()
    problems = [line for line in lines if line.strip() and not line.startswith(missing)]
    installed = os.access(executable, os.X_OK)

    assert ([], 0 if installed else 1) == (problems, result.returncode)


def test_unit_runs_unprivileged_sandboxed_with_state_directory() -> None:
    """The unit has the user, state directory, restart, stop and sandboxing settings."""
    expected = {
        "User": "fleetstream",
        "StateDirectory": "fleetstream",
        "EnvironmentFile": "/etc/fleetstream/fleetstream.env",
        "ExecStart": (
            "/opt/fleetstream/bin/fleetstream run --config /etc/fleetstream/fleetstream.yaml"
        ),
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "ExecReload": None,
    }
    service = _unit()["Service"]

    assert expected == {key: service.get(key) for key in expected}
    assert "/var/lib/fleetstream" == _unit_environment()["FLEETSTREAM_DATA_DIR"]
    assert "multi-user.target" == _unit().get("Install", "WantedBy")


def test_env_example_names_exactly_the_config_variables() -> None:
    """The env example names every config/*.yaml variable the unit does not set, no more."""
    referenced = set().union(*(_variables(p.read_text(encoding="utf-8")) for p in CONFIGS))

    assert referenced - set(_unit_environment()) == set(_env_example())


# Stop timeouts ------------------------------------------------------------------------------


def test_stop_timeouts_exceed_the_shipped_drain_timeouts() -> None:
    """TimeoutStopSec and the pod's grace period exceed the drain timeout they ship with."""
    systemd_env, pod_env = _systemd_environment(), _pod_environment()
    drains = [load_config(p, environ=systemd_env).pipeline.drain_timeout_secs for p in CONFIGS]
    configmap = parse_config(_configmap_config(), "configmap", environ=pod_env)
    stop = _seconds(_unit().get("Service", "TimeoutStopSec"))
    grace = _manifests()["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]

    assert (True, True) == (
        stop > max(drains),
        grace > configmap.pipeline.drain_timeout_secs,
    )


# Configs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates_with_the_env_example(
    path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fleetstream validate` accepts the config with the env example and the unit's env."""
    _use_environment(monkeypatch, path.read_text(encoding="utf-8"), _systemd_environment())

    assert 0 == main(["validate", str(path)])
    assert capsys.readouterr().out.startswith(f"{path}: ok")


def test_configmap_config_validates_with_secret_and_pod_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ConfigMap's config validates with just the example Secret and the pod's env."""
    text = _configmap_config()
    path = tmp_path / "fleetstream.yaml"
    path.write_text(text, encoding="utf-8")
    _use_environment(monkeypatch, text, _pod_environment())

    assert 0 == main(["validate", str(path)])
    assert capsys.readouterr().out.startswith(f"{path}: ok")


def test_configmap_config_has_no_default_passwords() -> None:
    """Every password in the ConfigMap's config is a required variable, never a default."""
    sources = yaml.safe_load(_configmap_config())["sources"]
    passwords = [s["auth"]["password"] for s in sources if s.get("auth", {}).get("password")]

    assert ["${CC_WEBHOOK_PASSWORD}", "${CSV_CAR1_PASSWORD}"] == passwords


# Kubernetes ---------------------------------------------------------------------------------


CORE_DOCUMENTS = [
    (path, document)
    for path in MANIFESTS
    for document in _documents(path)
    if document["apiVersion"] != "monitoring.coreos.com/v1"
]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("path", "document"),
    CORE_DOCUMENTS,
    ids=[f"{p.name}:{d['kind']}" for p, d in CORE_DOCUMENTS],
)
def test_manifest_matches_kubernetes_schema(
    path: Path, document: dict[str, Any], version: str
) -> None:
    """The manifest validates strictly against that Kubernetes version's schema, offline."""
    assert version.rsplit(".", 1)[0] == kubernetes_validate.validate(document, version, True)


def test_servicemonitor_is_outside_the_core_schemas_and_scrapes_metrics() -> None:
    """The ServiceMonitor (no core schema) selects the Service and scrapes its /metrics."""
    objects = _manifests()
    monitor, service = objects["ServiceMonitor"], objects["Service"]
    with pytest.raises(SchemaNotFoundError):
        kubernetes_validate.validate(monitor, KUBERNETES_VERSIONS[-1], True)
    selected = monitor["spec"]["selector"]["matchLabels"].items()
    endpoints = [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]]
    service_ports = {p["name"] for p in service["spec"]["ports"]}

    assert ("monitoring.coreos.com/v1", "ServiceMonitor") == (
        monitor["apiVersion"],
        monitor["kind"],
    )
    assert (True, [("http", "/metrics")], True) == (
        selected <= service["metadata"]["labels"].items(),
        endpoints,
        {port for port, _ in endpoints} <= service_ports,
    )


def test_manifests_refer_to_each_other() -> None:
    """Selectors, volumes, Secret and ports of the manifests refer to each other."""
    objects = _manifests()
    deployment = objects["Deployment"]
    pod = deployment["spec"]["template"]
    container = _container(deployment)
    pod_labels = pod["metadata"]["labels"].items()
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    config_path = container["args"][container["args"].index("--config") + 1]
    data_dir = next(e["value"] for e in container["env"] if e["name"] == "FLEETSTREAM_DATA_DIR")

    selectors = {
        kind: objects[kind]["spec"]["selector"].get(
            "matchLabels", objects[kind]["spec"]["selector"]
        )
        for kind in ("Deployment", "Service", "PodDisruptionBudget")
    }
    assert {kind: True for kind in selectors} == {
        kind: selector.items() <= pod_labels for kind, selector in selectors.items()
    }
    assert {
        "config": objects["ConfigMap"]["metadata"]["name"],
        "data": objects["PersistentVolumeClaim"]["metadata"]["name"],
        "secret": objects["Secret"]["metadata"]["name"],
        "config file": "fleetstream.yaml",
        "ports": {"http"},
    } == {
        "config": volumes[mounts[str(Path(config_path).parent)]]["configMap"]["name"],
        "data": volumes[mounts[data_dir]]["persistentVolumeClaim"]["claimName"],
        "secret": container["envFrom"][0]["secretRef"]["name"],
        "config file": Path(config_path).name,
        "ports": {p["name"] for p in container["ports"]}
        | {container[probe]["httpGet"]["port"] for probe in ("livenessProbe", "readinessProbe")}
        | {p["targetPort"] for p in objects["Service"]["spec"]["ports"]},
    }


def test_deployment_is_single_writer_and_hardened() -> None:
    """One Recreate replica with probes, non-root read-only container, resources, image UID."""
    deployment = _manifests()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    image_user = next(a for k, a in reversed(_dockerfile_instructions()) if k == "USER")

    assert {
        "replicas": 1,
        "strategy": "Recreate",
        "probes": ("/healthz", "/readyz"),
        "runAsNonRoot": True,
        "runAsUser": image_user.split(":")[0],
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "dropped": ["ALL"],
        "resources": {"limits": {"cpu", "memory"}, "requests": {"cpu", "memory"}},
    } == {
        "replicas": deployment["spec"]["replicas"],
        "strategy": deployment["spec"]["strategy"]["type"],
        "probes": (
            container["livenessProbe"]["httpGet"]["path"],
            container["readinessProbe"]["httpGet"]["path"],
        ),
        "runAsNonRoot": pod["securityContext"]["runAsNonRoot"],
        "runAsUser": str(pod["securityContext"]["runAsUser"]),
        "readOnlyRootFilesystem": container["securityContext"]["readOnlyRootFilesystem"],
        "allowPrivilegeEscalation": container["securityContext"]["allowPrivilegeEscalation"],
        "dropped": container["securityContext"]["capabilities"]["drop"],
        "resources": {k: set(v) for k, v in container["resources"].items()},
    }


def test_kustomization_lists_every_manifest_but_the_secret_and_servicemonitor() -> None:
    """The kustomize base applies every manifest except the placeholder Secret and the CRD."""
    resources = yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))["resources"]

    assert {p.name for p in MANIFESTS} - NOT_IN_KUSTOMIZATION == set(resources)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl missing")
def test_kustomization_builds() -> None:
    """`kubectl kustomize` builds the base offline into the listed kinds."""
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(result.stdout) if d)
    expected = ["ConfigMap", "Deployment", "PersistentVolumeClaim", "PodDisruptionBudget"]

    assert (0, [*expected, "Service"]) == (result.returncode, kinds), result.stderr


# Metrics in the dashboard and the alerts ----------------------------------------------------


@pytest.mark.parametrize("path", [DASHBOARD, ALERTS], ids=lambda p: p.name)
def test_references_only_exported_metrics(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fleetstream_* name in the file is a sample name the daemon exports."""
    referenced = set(METRIC.findall(path.read_text(encoding="utf-8")))

    assert set() == referenced - _exported_metrics(monkeypatch)


def test_dashboard_shows_the_requested_metrics() -> None:
    """The dashboard has a query for each metric the issue asked to see."""
    referenced = set(METRIC.findall(" ".join(_dashboard_expressions())))

    assert set() == DASHBOARD_METRICS - referenced


def test_queries_are_valid_promql_over_known_series(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dashboard and alert queries parse as PromQL and select only exported series or up."""
    known = _exported_metrics(monkeypatch) | {"up"}
    expressions = _dashboard_expressions() + [rule["expr"] for rule in _alert_rules()]
    errors, selected = [], set()

    def collect(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            selected.add(node.name)
        return True

    for expression in expressions:
        for macro, value in GRAFANA_MACROS.items():
            expression = expression.replace(macro, value)
        try:
            promql_parser.walk(promql_parser.parse(expression), collect)
        except ValueError as exc:
            errors.append(f"{expression}: {exc}")

    assert ([], set()) == (errors, selected - known)


def test_dashboard_uses_the_datasource_variable() -> None:
    """Grafana 10 schema, ${DS_PROMETHEUS} everywhere, unique ids, panels within the grid."""
    dashboard = _dashboard()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    datasources = {json.dumps(p["datasource"], sort_keys=True) for p in panels} | {
        json.dumps(t["datasource"], sort_keys=True) for p in panels for t in p["targets"]
    }
    ids = [p["id"] for p in dashboard["panels"]]

    assert {
        "schemaVersion": True,
        "variable": ("datasource", "prometheus"),
        "datasources": {
            json.dumps({"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, sort_keys=True)
        },
        "unique ids": True,
        "outside grid": [],
    } == {
        "schemaVersion": 38 <= dashboard["schemaVersion"] < 40,
        "variable": (variables["DS_PROMETHEUS"]["type"], variables["DS_PROMETHEUS"]["query"]),
        "datasources": datasources,
        "unique ids": len(ids) == len(set(ids)),
        "outside grid": [p["title"] for p in panels if p["gridPos"]["x"] + p["gridPos"]["w"] > 24],
    }


# Alerts -------------------------------------------------------------------------------------


def test_every_alert_is_documented_in_the_runbook() -> None:
    """Each rule has severity, summary, description and a runbook_url to a runbook heading."""
    text = re.sub(r"^```.*?^```", "", RUNBOOK.read_text(encoding="utf-8"), flags=re.M | re.S)
    headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    anchors = {_anchor(h) for h in headings}
    problems = []
    for rule in _alert_rules():
        annotations = rule.get("annotations", {})
        url = annotations.get("runbook_url", "")
        page, _, anchor = url.partition("#")
        if rule["labels"].get("severity") not in {"warning", "critical"}:
            problems.append(f"{rule['alert']}: severity")
        if not annotations.get("summary") or not annotations.get("description"):
            problems.append(f"{rule['alert']}: summary or description")
        if not page.endswith("docs/runbook.md") or anchor not in anchors:
            problems.append(f"{rule['alert']}: runbook_url {url}")

    assert [] == problems


def require_promtool() -> None:
    """Missing promtool skips on a developer's machine; CI must have it (`make test` installs
    Debian's prometheus package when it runs as root), so there the test fails instead."""
    if shutil.which("promtool") is not None:
        return
    if os.environ.get("CI"):
        pytest.fail(
            "promtool missing in CI: apt-get install prometheus (make test does it as root)"
        )
    pytest.skip("promtool missing (apt-get install prometheus)")


def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules` accepts the file, templates included."""
    require_promtool()
    result = subprocess.run(
        ["promtool", "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert 0 == result.returncode, result.stdout + result.stderr


def _job(**labels: str) -> str:
    """A series selector body with the job and instance the cases use."""
    pairs = {"job": "fleetstream", "instance": "a:8080", **labels}
    return ", ".join(f'{k}="{v}"' for k, v in pairs.items())


def _labels(severity: str, **labels: str) -> dict[str, str]:
    """Labels of an alert raised from a series of `_job(...)`."""
    return {"job": "fleetstream", "instance": "a:8080", "severity": severity, **labels}


# (alert, input series, evaluation time, labels of the alerts expected then).
ALERT_CASES: list[tuple[str, list[tuple[str, str]], str, list[dict[str, str]]]] = [
    ("FleetstreamDown", [(f"up{{{_job()}}}", "0x10")], "6m", [_labels("critical")]),
    ("FleetstreamDown", [(f"up{{{_job()}}}", "0x3 1x10")], "6m", []),
    (
        "FleetstreamTargetMissing",
        [('up{job="other", instance="b:9100"}', "1x20")],
        "16m",
        [{"job": "fleetstream", "severity": "warning"}],
    ),
    ("FleetstreamTargetMissing", [(f"up{{{_job()}}}", "1x20")], "16m", []),
    (
        "FleetstreamSinkWriteFailures",
        [(f"fleetstream_sink_write_failures_total{{{_job(sink='local')}}}", "0+1x30")],
        "20m",
        [_labels("critical", sink="local")],
    ),
    (
        "FleetstreamSinkWriteFailures",
        [(f"fleetstream_sink_write_failures_total{{{_job(sink='local')}}}", "3x30")],
        "20m",
        [],
    ),
    # The first quarantined message of a new series: increase() alone would miss it.
    (
        "FleetstreamQuarantineGrowing",
        [
            (
                f"fleetstream_quarantined_total{{{_job(source='m', reason='missing_vin')}}}",
                "_x30 1x120",
            )
        ],
        "35m",
        [_labels("warning", source="m", reason="missing_vin")],
    ),
    (
        "FleetstreamQuarantineGrowing",
        [
            (
                f"fleetstream_quarantined_total{{{_job(source='m', reason='missing_vin')}}}",
                "_x30 1x120",
            )
        ],
        "100m",
        [],
    ),
    (
        "FleetstreamQuarantineGrowing",
        [(f"fleetstream_quarantined_total{{{_job(source='m', reason='bad')}}}", "1x70 2x60")],
        "80m",
        [_labels("warning", source="m", reason="bad")],
    ),
    (
        "FleetstreamSourceSilent",
        [(f"fleetstream_last_message_age_seconds{{{_job(source='cc')}}}", "7000+60x20")],
        "15m",
        [_labels("warning", source="cc")],
    ),
    (
        "FleetstreamSourceSilent",
        [(f"fleetstream_last_message_age_seconds{{{_job(source='cc')}}}", "10x20")],
        "15m",
        [],
    ),
    (
        "FleetstreamWebhookRefusing",
        [(f"fleetstream_http_responses_total{{{_job(source='cc', code='503')}}}", "0+10x30")],
        "20m",
        [_labels("warning", source="cc")],
    ),
    (
        "FleetstreamWebhookRefusing",
        [(f"fleetstream_http_responses_total{{{_job(source='cc', code='200')}}}", "0+10x30")],
        "20m",
        [],
    ),
    (
        "FleetstreamKafkaLagGrowing",
        [
            (
                f"fleetstream_kafka_consumer_lag{{{_job(source='m', topic='t', partition='0')}}}",
                "10000+100x90",
            )
        ],
        "70m",
        [_labels("warning", source="m", topic="t")],
    ),
    (
        "FleetstreamKafkaLagGrowing",
        [
            (
                f"fleetstream_kafka_consumer_lag{{{_job(source='m', topic='t', partition='0')}}}",
                "20000x90",
            )
        ],
        "70m",
        [],
    ),
    (
        "FleetstreamKafkaPaused",
        [(f"fleetstream_kafka_paused{{{_job(source='m')}}}", "1x40")],
        "35m",
        [_labels("warning", source="m")],
    ),
    (
        "FleetstreamKafkaPaused",
        [(f"fleetstream_kafka_paused{{{_job(source='m')}}}", " ".join(["1 0 0"] * 14))],
        "35m",
        [],
    ),
    (
        "FleetstreamKafkaCommitFailures",
        [(f"fleetstream_kafka_commit_failures_total{{{_job(source='m')}}}", "0+1x40")],
        "25m",
        [_labels("warning", source="m")],
    ),
    (
        "FleetstreamAmqpQueueIdle",
        [(f"fleetstream_amqp_queue_idle_seconds{{{_job(source='i', queue='q')}}}", "90000x10")],
        "5m",
        [_labels("warning", source="i", queue="q")],
    ),
    (
        "FleetstreamAmqpQueueIdle",
        [(f"fleetstream_amqp_queue_idle_seconds{{{_job(source='i', queue='q')}}}", "180000x10")],
        "5m",
        [
            _labels("warning", source="i", queue="q"),
            _labels("critical", source="i", queue="q"),
        ],
    ),
    (
        "FleetstreamAmqpQueueIdle",
        [(f"fleetstream_amqp_queue_idle_seconds{{{_job(source='i', queue='q')}}}", "3600x10")],
        "5m",
        [],
    ),
    (
        "FleetstreamAmqpNotConsuming",
        [(f"fleetstream_amqp_consuming{{{_job(source='i', queue='q')}}}", "0x20")],
        "16m",
        [_labels("warning", source="i", queue="q")],
    ),
    (
        "FleetstreamAmqpNotConsuming",
        [(f"fleetstream_amqp_consuming{{{_job(source='i', queue='q')}}}", "1x20")],
        "16m",
        [],
    ),
    (
        "FleetstreamAmqpReconnecting",
        [
            (
                f"fleetstream_amqp_reconnects_total{{{_job(source='i', reason='link lost')}}}",
                "0+1x40",
            )
        ],
        "35m",
        [_labels("warning", source="i")],
    ),
]


def test_every_alert_has_a_firing_case() -> None:
    """ALERT_CASES make each alert of the file fire at least once."""
    firing = {alert for alert, _, _, expected in ALERT_CASES if expected}

    assert {rule["alert"] for rule in _alert_rules()} == firing


def test_alerts_fire_when_intended(tmp_path: Path) -> None:
    """`promtool test rules` over ALERT_CASES: alerts fire on failures, stay quiet otherwise."""
    require_promtool()
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations")  # checked by promtool check rules; only logic here
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    tests = []
    for alert, series, at, expected in ALERT_CASES:
        alerts = [{"exp_labels": labels} for labels in expected]
        tests.append(
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": alerts}],
            }
        )
    spec = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    result = subprocess.run(
        ["promtool", "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert 0 == result.returncode, result.stdout + result.stderr


# Container image ----------------------------------------------------------------------------


def test_dockerfile_is_multistage_non_root_with_healthcheck() -> None:
    """Multi-stage, non-root USER, curl-free /healthz HEALTHCHECK, 8080, volume, EXTRAS."""
    instructions = _dockerfile_instructions()
    keywords = [k for k, _ in instructions]
    final_stage = keywords[len(keywords) - keywords[::-1].index("FROM") :]
    user = next(a for k, a in reversed(instructions) if k == "USER")
    healthcheck = next(a for k, a in instructions if k == "HEALTHCHECK")
    stages: list[list[tuple[str, str]]] = []
    for keyword, arguments in instructions:
        if keyword == "FROM":
            stages.append([])
        elif stages:
            stages[-1].append((keyword, arguments))
    install_stage = next(s for s in stages if any("pip install" in a for _, a in s))
    installs = [a for k, a in install_stage if k == "RUN" and "pip install" in a]
    build_args = [a.split("=")[0] for k, a in install_stage if k == "ARG"]

    assert {
        "stages>=2": True,
        "user is root": False,
        "user in final stage": True,
        "healthcheck": (True, False),
        "expose": "8080",
        "volume": '["/var/lib/fleetstream"]',
        "EXTRAS declared in that stage": True,
        "EXTRAS installed": [True],
    } == {
        "stages>=2": keywords.count("FROM") >= 2,
        "user is root": user.split(":")[0] in {"root", "0"},
        "user in final stage": "USER" in final_stage,
        "healthcheck": ("/healthz" in healthcheck, "curl" in healthcheck),
        "expose": next(a for k, a in instructions if k == "EXPOSE"),
        "volume": next(a for k, a in instructions if k == "VOLUME"),
        "EXTRAS declared in that stage": "EXTRAS" in build_args,
        "EXTRAS installed": ["${EXTRAS" in a for a in installs],
    }


@pytest.mark.parametrize(
    ("extras", "target"), [("", "."), ("kafka", ".[kafka]"), ("kafka,amqp", ".[kafka,amqp]")]
)
def test_dockerfile_extras_expand_to_the_pip_target(extras: str, target: str) -> None:
    """The pip target, expanded by /bin/sh as RUN does, carries exactly the EXTRAS given."""
    install = next(a for k, a in _dockerfile_instructions() if k == "RUN" and "pip install" in a)
    word = shlex.split(install, posix=False)[-1]
    result = subprocess.run(
        ["/bin/sh", "-c", f"printf %s {word}"],
        env={"EXTRAS": extras, "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )

    assert target == result.stdout


def test_dockerignore_lets_in_what_the_dockerfile_copies() -> None:
    """The ignore file drops everything but the top-level paths the Dockerfile copies."""
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = set()
    for keyword, arguments in _dockerfile_instructions():
        if keyword == "COPY" and not arguments.startswith("--from"):
            copied |= {Path(source).parts[0] for source in arguments.split()[:-1]}

    assert ("*", copied) == (lines[0], {line[1:] for line in lines if line.startswith("!")})


# Documentation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", [ROOT / "README.md", RUNBOOK, DEPLOYMENT_DOC], ids=lambda p: p.name
)
def test_relative_links_resolve(path: Path) -> None:
    """Relative Markdown links in the deployment docs and the README point at existing files."""
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8"))
    broken = [link for link in links if "://" not in link and not (path.parent / link).exists()]

    assert [] == broken
