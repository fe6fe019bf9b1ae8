"""The Helm chart and the Dockerfile.

The chart is rendered and linted with Helm's own Go SDK through `helm-python-sdk` (no helm
binary), every rendered object is validated against the Kubernetes OpenAPI schemas bundled
in `kubernetes-validate` (offline), and the rendered config.yaml is read by the gateway's
own validator. The rest checks the wiring a broken chart would get wrong: probe ports vs the
configured port, secrets only by reference, the config checksum, the drain/grace budget,
the security context, selectors, Redis, the usage ledger's PostgreSQL (its migration is
run, as the init container would run it, against a real PostgreSQL), the dashboard, and the
image's entrypoint.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from gateway.config import parse_config
from policies.money.ledger_schema import LATEST
from tests.support.paths import ROOT
from tests.support.postgres import execute

CHART = ROOT / "helm" / "rerank-gateway"
VALUES_FILES = {
    p.name.removesuffix("-values.yaml"): p for p in sorted(CHART.glob("ci/*-values.yaml"))
}
RELEASE = "rg"
NAMESPACE = "rerank"
# Oldest Kubernetes the full example needs (the native preStop sleep action) and the newest
# schema set that kubernetes-validate ships.
KUBE_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
FULLNAME = f"{RELEASE}-rerank-gateway"
PLACEHOLDER_DIGEST = "0" * 64
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


# --------------------------------------------------------------------------------------
# Rendering helpers


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe loader that refuses duplicate mapping keys (kubectl and the API server do too)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def load_yaml_docs(text: str) -> list[Any]:
    return [doc for doc in yaml.load_all(text, Loader=_StrictLoader) if doc is not None]


@dataclass
class Rendered:
    files: dict[str, str]

    @functools.cached_property
    def docs(self) -> list[dict[str, Any]]:
        out = []
        for name, text in self.files.items():
            if name.endswith("NOTES.txt"):
                continue
            out.extend(load_yaml_docs(text))
        return out

    @property
    def notes(self) -> str:
        return self.files["rerank-gateway/templates/NOTES.txt"]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, component: str = "gateway") -> dict[str, Any]:
        found = [
            d
            for d in self.all(kind)
            if d["metadata"]["labels"].get("app.kubernetes.io/component", component) == component
        ]
        assert len(found) == 1, f"expected one {kind} for {component}, got {len(found)}"
        return found[0]

    def maybe(self, kind: str) -> dict[str, Any] | None:
        found = self.all(kind)
        return found[0] if found else None

    @property
    def config_map(self) -> dict[str, Any]:
        return next(d for d in self.all("ConfigMap") if d["metadata"]["name"] == FULLNAME)

    @property
    def config_text(self) -> str:
        return self.config_map["data"]["config.yaml"]

    @property
    def config(self) -> dict[str, Any]:
        return yaml.safe_load(self.config_text)

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment", "gateway")

    @property
    def pod_spec(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.pod_spec["containers"]
        return container

    @property
    def checksum(self) -> str:
        return self.deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def values_of(name: str) -> dict[str, Any]:
    return yaml.safe_load(VALUES_FILES[name].read_text()) or {}


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> Rendered:
    return Rendered(chart.render(values or {}, name=RELEASE, namespace=NAMESPACE))


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (match,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return match


def subset(small: dict[str, str], big: dict[str, str]) -> bool:
    return all(big.get(k) == v for k, v in small.items())


def fake_env(config_text: str) -> dict[str, str]:
    """What the existing Secret would hold: one unmistakable fake value per ${VAR}."""
    return {name: f"FAKE-SECRET-{name}-7f3a9c" for name in set(ENV_REF.findall(config_text))}


def gateway_parse(config: dict[str, Any], env: dict[str, str]) -> Any:
    """Validate a rendered config with the gateway's own reader."""
    return parse_config(copy.deepcopy(config), env)


# --------------------------------------------------------------------------------------
# Render, lint, schemas


def test_values_files_present() -> None:
    assert set(VALUES_FILES) == {"default", "full", "providers"}


@pytest.mark.parametrize("name", sorted(VALUES_FILES))
def test_lint_is_clean(name: str) -> None:
    for kube in KUBE_VERSIONS:
        report = helm.lint(CHART, values_of(name), strict=True, kube_version=f"v{kube}.0")
        assert report["total_charts_linted"] == 1
        assert report["errors"] == [], report
        serious = [m for m in report["messages"] if m["severity"] >= 2]
        assert serious == [], serious


@pytest.mark.parametrize("name", sorted(VALUES_FILES))
def test_manifests_match_kubernetes_schemas(chart: helm.Chart, name: str) -> None:
    docs = render(chart, values_of(name)).docs
    assert docs
    for doc in docs:
        if doc["apiVersion"] == "monitoring.coreos.com/v1":
            check_service_monitor_shape(doc)
            continue
        for kube in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, kube, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                what = f"{doc['kind']}/{doc['metadata']['name']}"
                pytest.fail(f"{what} (k8s {kube}) at {where}: {exc.message}")


def check_service_monitor_shape(doc: dict[str, Any]) -> None:
    """The ServiceMonitor CRD has no bundled schema: check the fields the operator needs."""
    assert doc["kind"] == "ServiceMonitor"
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    assert isinstance(doc["metadata"]["namespace"], str)
    assert all(isinstance(v, str) for v in doc["metadata"]["labels"].values())
    spec = doc["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    labels = spec["selector"]["matchLabels"]
    assert labels and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
    assert all(isinstance(n, str) for n in spec["namespaceSelector"]["matchNames"])
    assert isinstance(spec["endpoints"], list) and spec["endpoints"]
    allowed = {
        "port",
        "path",
        "scheme",
        "interval",
        "scrapeTimeout",
        "relabelings",
        "metricRelabelings",
        "honorLabels",
    }
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= allowed, set(endpoint) - allowed
        assert isinstance(endpoint["port"], str)
        assert endpoint["path"].startswith("/")
        assert endpoint["scheme"] in ("http", "https")
        for key in ("interval", "scrapeTimeout"):
            assert re.fullmatch(r"[0-9]+(ms|s|m|h)", endpoint[key]), endpoint[key]


@pytest.mark.parametrize(
    ("name", "kinds"),
    [
        (
            "default",
            [
                "ConfigMap",
                "ConfigMap",
                "Deployment",
                "PodDisruptionBudget",
                "Service",
                "ServiceAccount",
            ],
        ),
        (
            "full",
            [
                "ConfigMap",
                "ConfigMap",
                "Deployment",
                "Deployment",
                "Deployment",
                "HorizontalPodAutoscaler",
                "Ingress",
                "NetworkPolicy",
                "NetworkPolicy",
                "NetworkPolicy",
                "PersistentVolumeClaim",
                "PodDisruptionBudget",
                "Secret",
                "Service",
                "Service",
                "Service",
                "ServiceAccount",
                "ServiceMonitor",
            ],
        ),
        (
            "providers",
            [
                "ConfigMap",
                "ConfigMap",
                "Deployment",
                "PodDisruptionBudget",
                "Service",
                "ServiceAccount",
            ],
        ),
    ],
)
def test_rendered_objects(chart: helm.Chart, name: str, kinds: list[str]) -> None:
    rendered = render(chart, values_of(name))
    assert sorted(d["kind"] for d in rendered.docs) == kinds
    assert all(d["metadata"]["namespace"] == NAMESPACE for d in rendered.docs)
    # The only Secret the chart makes is the bundled PostgreSQL's generated password.
    for secret in rendered.all("Secret"):
        assert secret["metadata"]["labels"]["app.kubernetes.io/component"] == "postgres"
        assert set(secret["data"]) == {"password"}


def test_unknown_values_key_is_refused(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmValuesError, match="replicas"):
        render(chart, {"replicas": 3})


# --------------------------------------------------------------------------------------
# The gateway config


@pytest.mark.parametrize("name", sorted(VALUES_FILES))
def test_rendered_config_is_accepted_by_the_gateway(chart: helm.Chart, name: str) -> None:
    rendered = render(chart, values_of(name))
    config = gateway_parse(rendered.config, fake_env(rendered.config_text))
    assert config.server.host == "0.0.0.0"
    assert config.server.port == rendered.container["ports"][0]["containerPort"] == 8080
    assert config.auth.mode == "keys"
    assert any(team.key_sha256 for team in config.teams.values())


def test_default_config(chart: helm.Chart) -> None:
    rendered = render(chart)
    assert rendered.config["server"] == {
        "host": "0.0.0.0",
        "port": 8080,
        "metrics_port": 9090,
        "metrics_host": "0.0.0.0",
        "drain_timeout_s": 20,
        "workers": 1,
        "request_timeout_s": 30,
    }
    assert rendered.config["teams"] == {"example-team": {"key_sha256": [PLACEHOLDER_DIGEST]}}
    assert "state" not in rendered.config
    assert "placeholder key digest" in rendered.notes


@pytest.mark.parametrize("name", sorted(VALUES_FILES))
def test_probes_and_service_use_the_configured_port(chart: helm.Chart, name: str) -> None:
    rendered = render(chart, values_of(name))
    check_ports(rendered, expected=8080)


def test_container_port_drives_config_probes_and_service(chart: helm.Chart) -> None:
    rendered = render(chart, {"containerPort": 9090, "service": {"port": 80}})
    check_ports(rendered, expected=9090)
    assert rendered.one("Service")["spec"]["ports"][0]["port"] == 80


def check_ports(rendered: Rendered, expected: int) -> None:
    config_port = rendered.config["server"]["port"]
    assert config_port == expected
    container = rendered.container
    probes = {
        kind: container[kind]["httpGet"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert port_number(container, probe["port"]) == config_port
    service_port = rendered.one("Service")["spec"]["ports"][0]
    assert port_number(container, service_port["targetPort"]) == config_port
    assert container["args"] == [
        "serve", "--config", "/etc/rerank-gateway/config.yaml", "--host", "0.0.0.0"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"config": {"server": {"port": 9000}}}, "differs from containerPort"),
        ({"config": {"server": {"host": "127.0.0.1"}}}, "must listen on all addresses"),
        ({"config": {"auth": {"mode": "none"}}}, "auth.mode none is not allowed"),
    ],
)
def test_config_conflicts_with_the_pod_are_refused(
    chart: helm.Chart, override: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render(chart, override)


def test_ipv6_any_address_is_kept(chart: helm.Chart) -> None:
    assert render(chart, {"config": {"server": {"host": "::"}}}).config["server"]["host"] == "::"


# --------------------------------------------------------------------------------------
# Secrets by reference only


def test_secrets_are_referenced_never_inlined(chart: helm.Chart) -> None:
    rendered = render(chart, values_of("providers"))
    text = rendered.config_text
    assert {"COHERE_API_KEY", "PRIVATE_RERANK_API_KEY", "REDIS_PASSWORD", "LEDGER_PASSWORD"} <= set(
        ENV_REF.findall(text)
    )
    config = rendered.config
    assert config["providers"]["cohere"]["api_key"] == "${COHERE_API_KEY}"
    assert (
        config["state"]["redis_url"] == "rediss://:${REDIS_PASSWORD}@redis.example.internal:6380/0"
    )
    assert config["ledger"]["url"] == (
        "postgresql://rerank:${LEDGER_PASSWORD}@pg.example.internal:5432/rerank?sslmode=require"
    )
    # The Secret's content reaches only the gateway's environment, never a manifest.
    env = fake_env(text)
    parsed = gateway_parse(config, env)
    assert parsed.providers["cohere"].options.api_key == env["COHERE_API_KEY"]
    assert f":{env['LEDGER_PASSWORD']}@" in parsed.ledger.url
    everything = "\n".join(rendered.files.values())
    for value in env.values():
        assert value not in everything
    assert not rendered.all("Secret")
    env_from = rendered.container["envFrom"]
    assert env_from == [{"secretRef": {"name": "rerank-provider-keys", "optional": False}}]
    assert "rerank-provider-keys" in rendered.notes
    assert (
        "LEDGER_PASSWORD, COHERE_API_KEY, PRIVATE_RERANK_API_KEY, REDIS_PASSWORD" in rendered.notes
    )


def test_no_secret_configured_means_no_env_from(chart: helm.Chart) -> None:
    rendered = render(chart)
    assert "envFrom" not in rendered.container
    warned = render(
        chart,
        {"config": {"providers": {"cohere": {"type": "cohere", "api_key": "${COHERE_API_KEY}"}}}},
    )
    assert "secrets.existingSecret is not set" in warned.notes


FAKE_LIVE_KEY = "sk-live-THIS-MUST-NOT-BE-RENDERED-42"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"config": {"providers": {"cohere": {"type": "cohere", "api_key": FAKE_LIVE_KEY}}}},
            r"config\.providers\.cohere\.api_key looks like a secret",
        ),
        (
            {
                "config": {
                    "providers": {
                        "cohere": {
                            "type": "cohere",
                            "api_key": "${COHERE_API_KEY:-" + FAKE_LIVE_KEY + "}",
                        }
                    }
                }
            },
            r"config\.providers\.cohere\.api_key looks like a secret",
        ),
        (
            {
                "config": {
                    "providers": {
                        "oci": {
                            "type": "oci",
                            "region": "us-chicago-1",
                            "compartment_id": "ocid1.compartment.oc1..x",
                            "pass_phrase": FAKE_LIVE_KEY,
                        }
                    }
                }
            },
            r"config\.providers\.oci\.pass_phrase looks like a secret",
        ),
        (
            {"redis": {"url": f"redis://:{FAKE_LIVE_KEY}@redis:6379/0"}},
            "literal password in a Redis URL",
        ),
        (
            {"config": {"state": {"redis_url": f"rediss://default:{FAKE_LIVE_KEY}@redis:6379"}}},
            "literal password in a Redis URL",
        ),
    ],
)
def test_literal_secrets_are_refused(
    chart: helm.Chart, override: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=message) as caught:
        render(chart, override)
    assert FAKE_LIVE_KEY not in str(caught.value)


def test_secret_values_have_no_place_in_the_values(chart: helm.Chart) -> None:
    """Where a careless chart would take the key itself, this one's schema refuses it."""
    for override in (
        {"secrets": {"existingSecret": "keys", "COHERE_API_KEY": FAKE_LIVE_KEY}},
        {"secrets": {"existingSecret": "keys", "data": {"COHERE_API_KEY": FAKE_LIVE_KEY}}},
        {"cohere": {"apiKey": FAKE_LIVE_KEY}},
    ):
        with pytest.raises(helm.HelmValuesError, match="additional properties"):
            render(chart, override)


# --------------------------------------------------------------------------------------
# Config checksum


def test_config_checksum_is_the_rendered_configmap_hash(chart: helm.Chart) -> None:
    rendered = render(chart)
    configmap = rendered.files["rerank-gateway/templates/configmap.yaml"]
    assert rendered.checksum == hashlib.sha256(configmap.encode()).hexdigest()


def test_config_checksum_changes_with_config_only(chart: helm.Chart) -> None:
    base = render(chart).checksum
    assert render(chart).checksum == base
    unrelated: list[dict[str, Any]] = [
        {"replicaCount": 5},
        {"resources": {"limits": {"cpu": "4", "memory": "2Gi"}}},
        {"image": {"tag": "0.2.0"}},
        {"podAnnotations": {"team": "platform"}},
        {"autoscaling": {"enabled": True}},
        {"shutdown": {"preStopSleepSeconds": 15}},
        {"secrets": {"existingSecret": "other-keys"}},
    ]
    for override in unrelated:
        assert render(chart, override).checksum == base, override
    related: list[dict[str, Any]] = [
        {"config": {"logging": {"level": "debug"}}},
        {"config": {"teams": {"extra": {"key_sha256": ["ab" * 32]}}}},
        {"config": {"server": {"drain_timeout_s": 30}}},
        {"redis": {"url": "redis://redis.example:6379/0"}},
        {"ledger": {"url": "postgresql://rerank@pg.example:5432/rerank"}},
        {"ledger": {"enabled": True}},
        {"containerPort": 9090},
    ]
    seen = {base}
    for override in related:
        checksum = render(chart, override).checksum
        assert checksum not in seen, override
        seen.add(checksum)


# --------------------------------------------------------------------------------------
# Shutdown: preStop sleep + drain must fit the grace period


def pre_stop_seconds(container: dict[str, Any]) -> int:
    pre_stop = container["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        return int(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep"
    return int(command[1])


@pytest.mark.parametrize("name", sorted(VALUES_FILES))
def test_grace_period_covers_pre_stop_and_drain(chart: helm.Chart, name: str) -> None:
    rendered = render(chart, values_of(name))
    drain = rendered.config["server"]["drain_timeout_s"]
    grace = rendered.pod_spec["terminationGracePeriodSeconds"]
    assert grace >= pre_stop_seconds(rendered.container) + drain
    assert str(grace) in rendered.notes


@pytest.mark.parametrize(
    ("pre_stop", "drain", "margin", "action"),
    [(5, 20, 10, "exec"), (0, 0, 0, "exec"), (10, 45, 5, "sleep"), (3, 12.5, 2, "exec")],
)
def test_grace_period_is_derived_from_values(
    chart: helm.Chart, pre_stop: int, drain: float, margin: int, action: str
) -> None:
    rendered = render(
        chart,
        {
            "shutdown": {
                "preStopSleepSeconds": pre_stop,
                "graceMarginSeconds": margin,
                "preStopAction": action,
            },
            "config": {"server": {"drain_timeout_s": drain}},
        },
    )
    assert rendered.config["server"]["drain_timeout_s"] == drain
    assert pre_stop_seconds(rendered.container) == pre_stop
    assert (
        rendered.pod_spec["terminationGracePeriodSeconds"] == pre_stop + math.ceil(drain) + margin
    )


def test_explicit_grace_period(chart: helm.Chart) -> None:
    rendered = render(chart, {"shutdown": {"terminationGracePeriodSeconds": 120}})
    assert rendered.pod_spec["terminationGracePeriodSeconds"] == 120
    with pytest.raises(helm.HelmRenderError, match="shorter than"):
        render(chart, {"shutdown": {"terminationGracePeriodSeconds": 20}})


def test_drain_timeout_without_value_uses_gateway_default(chart: helm.Chart) -> None:
    rendered = render(chart, {"config": {"server": {"drain_timeout_s": None}}})
    assert rendered.config["server"]["drain_timeout_s"] == 20
    assert rendered.pod_spec["terminationGracePeriodSeconds"] == 5 + 20 + 10


# --------------------------------------------------------------------------------------
# Security and resources


@pytest.mark.parametrize("name", sorted(VALUES_FILES))
def test_every_container_is_locked_down(chart: helm.Chart, name: str) -> None:
    rendered = render(chart, values_of(name))
    workloads = rendered.all("Deployment")
    assert workloads
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"] + pod.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True
            assert sc["runAsUser"] != 0
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][part]), part
    gateway = rendered.container
    assert gateway["securityContext"]["runAsUser"] == 10001
    tmp = next(m for m in gateway["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in rendered.pod_spec["volumes"] if v["name"] == tmp["name"])
    assert "emptyDir" in volume


def test_workload_identity_annotations(chart: helm.Chart) -> None:
    full = render(chart, values_of("full"))
    account = full.one("ServiceAccount")
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/rerank-gateway"
    }
    assert full.pod_spec["serviceAccountName"] == account["metadata"]["name"]
    azure = render(chart, values_of("providers"))
    assert azure.one("ServiceAccount")["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": "00000000-0000-0000-0000-000000000000"
    }
    labels = azure.deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["azure.workload.identity/use"] == "true"
    oci = render(chart, {"serviceAccount": {"automountServiceAccountToken": True}})
    assert oci.pod_spec["automountServiceAccountToken"] is True
    assert oci.one("ServiceAccount")["automountServiceAccountToken"] is True
    existing = render(chart, {"serviceAccount": {"create": False, "name": "shared-identity"}})
    assert not existing.all("ServiceAccount")
    assert existing.pod_spec["serviceAccountName"] == "shared-identity"


# --------------------------------------------------------------------------------------
# Selectors, scaling, disruption, monitoring, network


@pytest.mark.parametrize("name", sorted(VALUES_FILES))
def test_selectors_pick_the_right_pods(chart: helm.Chart, name: str) -> None:
    rendered = render(chart, values_of(name))
    gateway_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    others = [
        d["spec"]["template"]["metadata"]["labels"]
        for d in rendered.all("Deployment")
        if d["metadata"]["name"].endswith(("-redis", "-postgres"))
    ]
    selectors = [
        rendered.deployment["spec"]["selector"]["matchLabels"],
        rendered.one("Service")["spec"]["selector"],
        rendered.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        *(
            c["labelSelector"]["matchLabels"]
            for c in rendered.pod_spec["topologySpreadConstraints"]
        ),
    ]
    if policy := rendered.maybe("NetworkPolicy"):
        selectors.append(rendered.one("NetworkPolicy")["spec"]["podSelector"]["matchLabels"])
        assert policy
    for selector in selectors:
        assert selector and subset(selector, gateway_labels)
        for labels in others:
            assert not subset(selector, labels)
    zones = [c["topologyKey"] for c in rendered.pod_spec["topologySpreadConstraints"]]
    assert zones == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]


def test_replicas_or_autoscaler(chart: helm.Chart) -> None:
    assert render(chart).deployment["spec"]["replicas"] == 2
    full = render(chart, values_of("full"))
    assert "replicas" not in full.deployment["spec"]
    hpa = full.one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": FULLNAME,
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    cpu, rate = hpa["metrics"]
    assert cpu["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 65},
    }
    assert rate["pods"]["metric"]["name"] == "rerank_requests_per_second"
    assert rate["pods"]["target"] == {"type": "AverageValue", "averageValue": "40"}
    cpu_only = render(chart, {"autoscaling": {"enabled": True}}).one("HorizontalPodAutoscaler")
    assert [m["type"] for m in cpu_only["spec"]["metrics"]] == ["Resource"]
    with pytest.raises(helm.HelmRenderError, match="minReplicas"):
        render(chart, {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}})


def test_disruption_budget(chart: helm.Chart) -> None:
    assert render(chart).one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    full = render(chart, values_of("full")).one("PodDisruptionBudget")["spec"]
    assert full["minAvailable"] == 2 and "maxUnavailable" not in full
    assert not render(chart, {"podDisruptionBudget": {"enabled": False}}).all("PodDisruptionBudget")


def test_service_monitor_scrapes_the_gateway_service(chart: helm.Chart) -> None:
    rendered = render(chart, values_of("full"))
    monitor = rendered.one("ServiceMonitor")
    service = rendered.one("Service")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert subset(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    (endpoint,) = monitor["spec"]["endpoints"]
    # It scrapes the private metrics port, not the one the API is served on.
    assert endpoint["port"] == "metrics" == service["spec"]["ports"][1]["name"]
    assert service["spec"]["ports"][1]["port"] == 9090
    assert port_number(rendered.container, "metrics") == rendered.config["server"]["metrics_port"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "15s"
    assert not render(chart).all("ServiceMonitor")


def test_network_policies(chart: helm.Chart) -> None:
    rendered = render(chart, values_of("full"))
    gateway_policy = rendered.one("NetworkPolicy", "gateway")["spec"]
    assert gateway_policy["policyTypes"] == ["Ingress", "Egress"]
    ingress, metrics = gateway_policy["ingress"]
    assert [port_number(rendered.container, p["port"]) for p in ingress["ports"]] == [8080]
    assert len(ingress["from"]) == 2
    assert [port_number(rendered.container, p["port"]) for p in metrics["ports"]] == [9090]
    egress_ports = {
        (p["port"], p.get("protocol")) for rule in gateway_policy["egress"] for p in rule["ports"]
    }
    assert {(53, "UDP"), (53, "TCP"), (6379, "TCP"), (443, "TCP")} <= egress_ports
    redis_policy = rendered.one("NetworkPolicy", "redis")["spec"]
    (allowed,) = redis_policy["ingress"][0]["from"]
    assert subset(
        allowed["podSelector"]["matchLabels"],
        rendered.deployment["spec"]["template"]["metadata"]["labels"],
    )
    external = render(
        chart,
        {
            "networkPolicy": {"enabled": True, "egress": {"enabled": True}},
            "redis": {"url": "redis://redis.example:6380/0"},
        },
    )
    ports = {p["port"] for r in external.one("NetworkPolicy")["spec"]["egress"] for p in r["ports"]}
    assert ports == {53, 6380, 443}  # the Redis port comes from redis.url
    for url, port in [
        ("rediss://:${REDIS_PASSWORD}@redis.example.internal:6381/0", 6381),
        ("redis://redis.example", 6379),
        ("redis://user:${P}@[fd00::1]:7000", 7000),
    ]:
        values = {
            "networkPolicy": {"enabled": True, "egress": {"enabled": True}},
            "redis": {"url": url},
        }
        egress = render(chart, values).one("NetworkPolicy")["spec"]["egress"]
        assert {p["port"] for r in egress for p in r["ports"]} == {53, port, 443}, url
    pinned = {"enabled": True, "egress": {"enabled": True, "redisPorts": [26379, 6379]}}
    egress = render(chart, {"networkPolicy": pinned, "redis": {"url": "redis://sentinel"}})
    ports = {p["port"] for r in egress.one("NetworkPolicy")["spec"]["egress"] for p in r["ports"]}
    assert ports == {53, 26379, 6379, 443}
    ingress_only = render(chart, {"networkPolicy": {"enabled": True}}).one("NetworkPolicy")["spec"]
    assert ingress_only["policyTypes"] == ["Ingress"] and "from" not in ingress_only["ingress"][0]


# --------------------------------------------------------------------------------------
# Redis


def test_bundled_redis_is_wired_into_the_config(chart: helm.Chart) -> None:
    rendered = render(chart, values_of("full"))
    service = rendered.one("Service", "redis")
    port = service["spec"]["ports"][0]["port"]
    url = f"redis://{service['metadata']['name']}.{NAMESPACE}.svc:{port}/0"
    # The bundled Redis evicts (volatile-lru): the gateway starts with a warning, not refused.
    assert rendered.config["state"] == {"redis_url": url, "on_evicting_redis": "warn"}
    assert rendered.config["cache"] == {"backend": "redis"}
    redis = rendered.one("Deployment", "redis")
    assert subset(service["spec"]["selector"], redis["spec"]["template"]["metadata"]["labels"])
    config = gateway_parse(rendered.config, {})
    assert config.state.redis_url == url
    assert "bundled Redis has no persistence" in rendered.notes


def test_external_redis(chart: helm.Chart) -> None:
    rendered = render(
        chart,
        {
            "redis": {"url": "rediss://redis.example:6380/1"},
            "config": {"cache": {"backend": "memory"}},
        },
    )
    assert rendered.config["state"] == {"redis_url": "rediss://redis.example:6380/1"}
    assert rendered.config["cache"] == {"backend": "memory"}  # an explicit choice is kept
    assert len(rendered.all("Deployment")) == 1
    with pytest.raises(helm.HelmRenderError, match="not both"):
        render(chart, {"redis": {"url": "redis://x:6379", "enabled": True}})
    with pytest.raises(helm.HelmRenderError, match=r"config\.state\.redis_url is set"):
        render(chart, {"redis": {"enabled": True}, "config": {"state": {"redis_url": "redis://x"}}})
    warned = render(chart)
    assert "without Redis" in warned.notes


@pytest.mark.parametrize(
    "url",
    [
        "redis://redis.example:6379/0",
        "redis+sentinel://:${REDIS_PASSWORD}@sentinel-0:26379,sentinel-1:26379/mymaster/0",
        "redis+cluster://:${REDIS_PASSWORD}@redis-cluster-0:6379,redis-cluster-1:6379",
    ],
)
def test_redis_url_puts_every_shared_backend_on_redis(chart: helm.Chart, url: str) -> None:
    rendered = render(chart, {"redis": {"url": url}, "replicaCount": 3})
    config = rendered.config
    assert config["state"] == {"redis_url": url}
    assert config["cache"]["backend"] == "redis"
    assert config["limits"]["limits_backend"] == "redis"  # rate limits, budgets, usage
    parsed = gateway_parse(config, fake_env(rendered.config_text))
    assert (parsed.cache.backend, parsed.limits.limits_backend) == ("redis", "redis")
    assert "WARNING" not in rendered.notes.split("still has the placeholder")[-1]
    # An explicit per-process choice is kept, and NOTES says what it means.
    kept = render(
        chart, {"redis": {"url": url}, "config": {"limits": {"limits_backend": "memory"}}}
    )
    assert kept.config["limits"]["limits_backend"] == "memory"
    assert "enforced per process (up to 2x)" in kept.notes


def test_workers_without_redis_are_warned_about(chart: helm.Chart) -> None:
    notes = render(chart, {"replicaCount": 1, "config": {"server": {"workers": 4}}}).notes
    assert "1 replica(s) x 4 worker(s) without Redis" in notes and "up to\n4x" in notes


# --------------------------------------------------------------------------------------
# The usage ledger (PostgreSQL)

EXTERNAL_LEDGER = "postgresql://rerank:${LEDGER_PASSWORD}@pg.example.internal:6432/rerank"
EGRESS_ON = {"enabled": True, "egress": {"enabled": True}}


def validate(rendered: Rendered) -> None:
    for doc in rendered.docs:
        if doc["apiVersion"] != "monitoring.coreos.com/v1":
            kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def migrate_container(rendered: Rendered) -> dict[str, Any]:
    (init,) = rendered.pod_spec["initContainers"]
    return init


def egress_ports(rendered: Rendered) -> set[int]:
    policy = rendered.one("NetworkPolicy", "gateway")["spec"]
    return {p["port"] for rule in policy["egress"] for p in rule["ports"]}


def test_external_ledger_url_fills_the_config(chart: helm.Chart) -> None:
    values = {"ledger": {"url": EXTERNAL_LEDGER}, "secrets": {"existingSecret": "keys"}}
    rendered = render(chart, values)
    validate(rendered)
    assert rendered.config["ledger"] == {"url": EXTERNAL_LEDGER}
    env = fake_env(json.dumps(rendered.config))
    assert set(env) == {"LEDGER_PASSWORD"}
    parsed = gateway_parse(rendered.config, env)
    assert parsed.ledger.url == EXTERNAL_LEDGER.replace(
        "${LEDGER_PASSWORD}", env["LEDGER_PASSWORD"]
    )
    assert parsed.ledger.schema == "rerank_ledger"
    # Nothing bundled, and no password the chart would hand out.
    assert not [d for d in rendered.docs if d["metadata"]["name"].endswith("-postgres")]
    assert "PGPASSWORD" not in env_of(rendered.container)
    assert (
        "LEDGER_PASSWORD" in rendered.notes
        and "Usage ledger: PostgreSQL (external)" in rendered.notes
    )
    # The settings stay in config.ledger; the URL (and a schema) come from the values.
    tuned = render(
        chart,
        {
            "ledger": {"url": EXTERNAL_LEDGER, "schema": "finance_ledger"},
            "config": {"ledger": {"event_retention_months": 25, "flush_interval_s": 1.0}},
        },
    )
    assert tuned.config["ledger"] == {
        "url": EXTERNAL_LEDGER,
        "schema": "finance_ledger",
        "event_retention_months": 25,
        "flush_interval_s": 1.0,
    }
    assert gateway_parse(tuned.config, {"LEDGER_PASSWORD": "x"}).ledger.schema == "finance_ledger"
    # The whole URL from the Secret, and a URL written in the config, are kept as given.
    whole = render(chart, {"ledger": {"url": "${LEDGER_URL}"}})
    assert whole.config["ledger"] == {"url": "${LEDGER_URL}"}
    assert gateway_parse(whole.config, {"LEDGER_URL": "postgresql://u@h/db"}).ledger.url == (
        "postgresql://u@h/db"
    )
    own = render(chart, {"config": {"ledger": {"url": EXTERNAL_LEDGER}}})
    assert own.config["ledger"] == {"url": EXTERNAL_LEDGER}
    assert "ledger" not in render(chart).config


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"ledger": {"url": EXTERNAL_LEDGER, "enabled": True}},
            r"set either ledger\.url \(external PostgreSQL\) or ledger\.enabled",
        ),
        (
            {"ledger": {"enabled": True}, "config": {"ledger": {"url": EXTERNAL_LEDGER}}},
            r"config\.ledger\.url is set: leave ledger\.url empty and ledger\.enabled false",
        ),
        (
            {"ledger": {"url": EXTERNAL_LEDGER}, "config": {"ledger": {"url": EXTERNAL_LEDGER}}},
            r"config\.ledger\.url is set",
        ),
        (
            {"config": {"ledger": {"spill_dir": "/var/spill"}}},
            r"config\.ledger has no url: set ledger\.url",
        ),
        (
            {
                "ledger": {"url": EXTERNAL_LEDGER, "schema": "a"},
                "config": {"ledger": {"schema": "b"}},
            },
            r"config\.ledger\.schema \(b\) differs from ledger\.schema \(a\)",
        ),
    ],
)
def test_ledger_conflicts_are_refused(
    chart: helm.Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render(chart, values)


def test_ledger_values_are_checked_by_the_schema(chart: helm.Chart) -> None:
    for values in (
        {"ledger": {"url": "mysql://rerank@db/rerank"}},
        {"ledger": {"schema": "Finance-Ledger"}},
        {"ledger": {"username": "rerank@corp"}},
        {"ledger": {"password": FAKE_LIVE_KEY}},
    ):
        with pytest.raises(helm.HelmValuesError):
            render(chart, values)


@pytest.mark.parametrize(
    ("values", "path"),
    [
        ({"ledger": {"url": f"postgresql://rerank:{FAKE_LIVE_KEY}@pg:5432/rerank"}}, "ledger.url"),
        (
            {"config": {"ledger": {"url": f"postgres://rerank:{FAKE_LIVE_KEY}@pg/rerank"}}},
            "config.ledger.url",
        ),
        (
            {
                "ledger": {
                    "url": f"postgresql://rerank@pg/rerank?sslmode=require&password={FAKE_LIVE_KEY}"
                }
            },
            "ledger.url",
        ),
        # Unescaped / and @ in the password, and a ${VAR} with a literal default.
        ({"ledger": {"url": f"postgresql://rerank:a/{FAKE_LIVE_KEY}@b@pg/rerank"}}, "ledger.url"),
        (
            {"ledger": {"url": "postgresql://rerank:${P:-" + FAKE_LIVE_KEY + "}@pg/rerank"}},
            "ledger.url",
        ),
        (
            {"ledger": {"url": f"postgresql://rerank:{FAKE_LIVE_KEY}@pg-0:5432,pg-1:5432/rerank"}},
            "ledger.url",
        ),
    ],
)
def test_literal_password_in_a_ledger_url_is_refused(
    chart: helm.Chart, values: dict[str, Any], path: str
) -> None:
    with pytest.raises(
        helm.HelmRenderError, match="literal password in a PostgreSQL URL"
    ) as caught:
        render(chart, values)
    assert str(caught.value).count(f"{path} has a literal password")
    assert FAKE_LIVE_KEY not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://rerank:${LEDGER_PASSWORD}@pg:5432/rerank",
        "postgresql://${LEDGER_USER}:${LEDGER_PASSWORD}@pg/rerank?sslmode=verify-full",
        "postgresql://rerank@pg/rerank?password=${LEDGER_PASSWORD}&sslmode=require",
        "postgresql://rerank@pg/rerank",
        "postgresql://rerank:@pg/rerank",
        "postgres://pg-0:5432,pg-1:5433/rerank?target_session_attrs=read-write",
        "${LEDGER_URL}",
    ],
)
def test_ledger_urls_without_a_literal_password_are_kept(chart: helm.Chart, url: str) -> None:
    assert render(chart, {"ledger": {"url": url}}).config["ledger"]["url"] == url


def test_bundled_postgres(chart: helm.Chart) -> None:
    rendered = render(chart, {"ledger": {"enabled": True}, "replicaCount": 3})
    validate(rendered)
    postgres = rendered.one("Deployment", "postgres")
    service = rendered.one("Service", "postgres")
    (secret,) = rendered.all("Secret")
    pod = postgres["spec"]["template"]
    (server,) = pod["spec"]["containers"]
    # The config's URL names the Service, its port, the database and the user the server
    # creates at its first start; the password is nowhere in the config.
    server_env = env_of(server)
    (port,) = service["spec"]["ports"]
    url = (
        f"postgresql://{server_env['POSTGRES_USER']}@{service['metadata']['name']}.{NAMESPACE}"
        f".svc:{port['port']}/{server_env['POSTGRES_DB']}"
    )
    assert rendered.config["ledger"] == {"url": url}
    assert gateway_parse(rendered.config, {}).ledger.url == url
    assert port_number(server, port["targetPort"]) == port["port"] == 5432
    assert subset(service["spec"]["selector"], pod["metadata"]["labels"])
    assert not subset(
        service["spec"]["selector"], rendered.deployment["spec"]["template"]["metadata"]["labels"]
    )
    assert postgres["spec"]["replicas"] == 1 and postgres["spec"]["strategy"] == {
        "type": "Recreate"
    }
    assert server["image"] == "postgres:16-alpine"
    # One password: the server's, the gateway's and the migration's come from the same key
    # of the generated Secret.
    password_ref = {"secretKeyRef": {"name": secret["metadata"]["name"], "key": "password"}}
    assert server_env["POSTGRES_PASSWORD"] == password_ref
    assert env_of(rendered.container)["PGPASSWORD"] == password_ref
    assert env_of(migrate_container(rendered))["PGPASSWORD"] == password_ref
    password = base64.b64decode(secret["data"]["password"]).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{32}", password)
    assert password not in rendered.config_text
    # Locked down like the Redis pod, its data below the mount point, probes that ask the
    # server itself.
    spec = pod["spec"]
    assert spec["securityContext"]["runAsUser"] == server["securityContext"]["runAsUser"] == 70
    assert spec["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    assert server_env["PGDATA"].startswith("/var/lib/postgresql/data/")
    assert {"/var/lib/postgresql/data", "/var/run/postgresql", "/tmp"} == set(mounts)
    assert server["readinessProbe"]["exec"]["command"][0] == "pg_isready"
    assert server["lifecycle"]["preStop"]["exec"]["command"][:2] == ["pg_ctl", "stop"]
    # No persistence asked: an emptyDir, and a warning that says what that means.
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/var/lib/postgresql/data"]]
    assert not rendered.all("PersistentVolumeClaim")
    assert (
        "keeps the ledger on an emptyDir: every usage record dies with its\npod" in rendered.notes
    )
    assert "(bundled)" in rendered.notes


def test_bundled_postgres_on_a_volume_and_with_your_password(chart: helm.Chart) -> None:
    values = {
        "ledger": {
            "enabled": True,
            "persistence": {"enabled": True, "size": "20Gi", "storageClass": "fast-ssd"},
            "auth": {"existingSecret": "ledger-db", "passwordKey": "pg-password"},
        }
    }
    rendered = render(chart, values)
    validate(rendered)
    (claim,) = rendered.all("PersistentVolumeClaim")
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    pod = rendered.one("Deployment", "postgres")["spec"]["template"]["spec"]
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data == {
        "name": "data",
        "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]},
    }
    assert not rendered.all("Secret")  # the password is yours
    ref = {"secretKeyRef": {"name": "ledger-db", "key": "pg-password"}}
    assert env_of(pod["containers"][0])["POSTGRES_PASSWORD"] == ref
    assert env_of(rendered.container)["PGPASSWORD"] == ref
    assert "emptyDir" not in rendered.notes and "no backups" in rendered.notes


def test_the_migration_runs_before_the_gateway(chart: helm.Chart) -> None:
    rendered = render(chart, values_of("providers"))
    init = migrate_container(rendered)
    gateway = rendered.container
    # The same image and config as the gateway: the schema it migrates to is the one that
    # gateway writes.
    assert init["name"] == "ledger-migrate"
    assert init["command"] == gateway["command"] == ["rerank-gateway"]
    assert init["args"] == ["ledger", "migrate", "--config", "/etc/rerank-gateway/config.yaml"]
    assert init["image"] == gateway["image"]
    assert init["envFrom"] == gateway["envFrom"] and init["env"] == gateway["env"]
    config_mount = next(m for m in init["volumeMounts"] if m["name"] == "config")
    assert config_mount == next(m for m in gateway["volumeMounts"] if m["name"] == "config")
    assert init["securityContext"] == gateway["securityContext"]
    assert "ledger migrate" in rendered.notes and "-c ledger-migrate" in rendered.notes
    # No ledger, nothing to migrate; migrating yourself is said plainly.
    assert "initContainers" not in render(chart).pod_spec
    yourself = render(chart, {"ledger": {"url": EXTERNAL_LEDGER, "migrate": {"enabled": False}}})
    assert "initContainers" not in yourself.pod_spec
    assert "WARNING: ledger.migrate.enabled is false" in yourself.notes


def pod_env(container: dict[str, Any], secrets: list[dict[str, Any]]) -> dict[str, str]:
    """A container's environment as the kubelet would set it from the rendered Secrets."""
    data = {s["metadata"]["name"]: s["data"] for s in secrets}
    env = {}
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = base64.b64decode(data[ref["name"]][ref["key"]]).decode()
    return env


def test_the_migration_command_migrates_a_real_postgres(
    chart: helm.Chart, own_postgres: Any, tmp_path: Path
) -> None:
    """Run what the chart's init container runs, with the environment the pod would have,
    against a real PostgreSQL that takes passwords only (the bundled URL names none, so the
    password must reach the client from the environment). Two replicas start together:
    both succeed, one migrates."""
    rendered = render(chart, {"ledger": {"enabled": True}})
    init = migrate_container(rendered)
    server = rendered.one("Deployment", "postgres")["spec"]["template"]["spec"]["containers"][0]
    server_env = pod_env(server, rendered.all("Secret"))
    user, database = server_env["POSTGRES_USER"], server_env["POSTGRES_DB"]
    # What the image's first start makes: the user, with the password, and its database.
    password = server_env["POSTGRES_PASSWORD"]
    asyncio.run(
        execute(own_postgres.dsn, f"CREATE ROLE {user} LOGIN SUPERUSER PASSWORD '{password}'")
    )
    asyncio.run(execute(own_postgres.dsn, f"CREATE DATABASE {database} OWNER {user}"))
    hba = own_postgres.data / "pg_hba.conf"
    hba.write_text(
        "host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
    )
    asyncio.run(execute(own_postgres.dsn, "SELECT pg_reload_conf()"))
    # The rendered config, with the Service's address swapped for this server's.
    config = rendered.config
    service = rendered.one("Service", "postgres")
    service_host = (
        f"{service['metadata']['name']}.{NAMESPACE}.svc:{service['spec']['ports'][0]['port']}"
    )
    assert service_host in config["ledger"]["url"]
    config["ledger"]["url"] = config["ledger"]["url"].replace(
        service_host, f"127.0.0.1:{own_postgres.port}"
    )
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    mount = next(m["mountPath"] for m in init["volumeMounts"] if m["name"] == "config")
    args = [str(config_file) if a == f"{mount}/config.yaml" else a for a in init["args"]]
    command = [str(Path(sys.executable).parent / init["command"][0]), *args]
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    env = {**base, **pod_env(init, rendered.all("Secret")), "TMPDIR": str(tmp_path)}

    def run(env: dict[str, str], *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*command, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    refused, *replicas = [run(base), run(env), run(env)]
    _, err = refused.communicate(timeout=60)
    assert refused.returncode == 1, err  # without the pod's environment: no password, refused
    outputs = [p.communicate(timeout=60) for p in replicas]
    assert [p.returncode for p in replicas] == [0, 0], outputs
    migrated = [out for out, _ in outputs if "nothing to apply" not in out]
    assert len(migrated) == 1, outputs  # one migrated, the other found nothing to do
    # The schema is the one this gateway writes (rerank_ledger: the chart set none).
    version = asyncio.run(
        execute(
            f"postgresql://postgres@127.0.0.1:{own_postgres.port}/{database}",
            "SELECT max(version) FROM rerank_ledger.schema_version",
        )
    )
    assert version[0][0] == LATEST


@pytest.mark.parametrize(
    ("url", "ports"),
    [
        (EXTERNAL_LEDGER, {6432}),
        ("postgresql://rerank@pg.example.internal/rerank", {5432}),
        ("postgres://rerank:${P}@pg-0:5433,pg-1:5434,pg-2/rerank", {5433, 5434, 5432}),
        ("postgresql://rerank:${P}@[fd00::1]:7432/rerank?sslmode=require", {7432}),
        ("${LEDGER_URL}", {5432}),
    ],
)
def test_network_policy_lets_the_gateway_reach_an_external_postgres(
    chart: helm.Chart, url: str, ports: set[int]
) -> None:
    rendered = render(chart, {"networkPolicy": EGRESS_ON, "ledger": {"url": url}})
    validate(rendered)
    assert egress_ports(rendered) == {53, 443} | ports
    pinned = {"enabled": True, "egress": {"enabled": True, "postgresPorts": [5432, 6432]}}
    assert egress_ports(render(chart, {"networkPolicy": pinned, "ledger": {"url": url}})) == {
        53,
        443,
        5432,
        6432,
    }


def test_network_policy_lets_only_the_gateway_reach_the_bundled_postgres(chart: helm.Chart) -> None:
    assert egress_ports(render(chart, {"networkPolicy": EGRESS_ON})) == {53, 443}
    rendered = render(
        chart, {"networkPolicy": EGRESS_ON, "ledger": {"enabled": True, "port": 5433}}
    )
    validate(rendered)
    postgres_pod = rendered.one("Deployment", "postgres")["spec"]["template"]
    gateway_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    (rule,) = [r for r in rendered.one("NetworkPolicy", "gateway")["spec"]["egress"] if r.get("to")]
    assert subset(rule["to"][0]["podSelector"]["matchLabels"], postgres_pod["metadata"]["labels"])
    assert rule["ports"] == [{"port": 5433, "protocol": "TCP"}]
    assert ":5433/" in rendered.config["ledger"]["url"]
    assert env_of(postgres_pod["spec"]["containers"][0])["PGPORT"] == "5433"
    inbound = rendered.one("NetworkPolicy", "postgres")["spec"]
    assert subset(inbound["podSelector"]["matchLabels"], postgres_pod["metadata"]["labels"])
    (allowed,) = inbound["ingress"]
    assert subset(allowed["from"][0]["podSelector"]["matchLabels"], gateway_labels)
    assert port_number(postgres_pod["spec"]["containers"][0], allowed["ports"][0]["port"]) == 5433


def test_spill_dir_gets_a_volume(chart: helm.Chart) -> None:
    spill = "/var/lib/rerank-gateway/ledger-spill"
    values = {"ledger": {"url": EXTERNAL_LEDGER}, "config": {"ledger": {"spill_dir": spill}}}
    rendered = render(chart, values)
    validate(rendered)
    mount = next(m for m in rendered.container["volumeMounts"] if m["mountPath"] == spill)
    volume = next(v for v in rendered.pod_spec["volumes"] if v["name"] == mount["name"])
    assert volume == {"name": mount["name"], "emptyDir": {"sizeLimit": "1Gi"}}
    assert gateway_parse(rendered.config, {"LEDGER_PASSWORD": "x"}).ledger.spill_dir == spill
    assert (
        "survive a restart of the gateway container, not the deletion of its pod" in rendered.notes
    )
    shared = render(
        chart,
        {
            **values,
            "ledger": {
                "url": EXTERNAL_LEDGER,
                "spillVolume": {"persistentVolumeClaim": {"claimName": "ledger-spill"}},
            },
        },
    )
    volume = next(v for v in shared.pod_spec["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"] == {"claimName": "ledger-spill"}
    assert "deletion of its pod" not in shared.notes
    plain = render(chart, {"ledger": {"url": EXTERNAL_LEDGER}})
    assert [m["mountPath"] for m in plain.container["volumeMounts"]] == [
        "/etc/rerank-gateway",
        "/tmp",
    ]
    for bad in ("spill", "/tmp", "/", "/etc/rerank-gateway/spill"):
        with pytest.raises(helm.HelmRenderError, match=r"config\.ledger\.spill_dir"):
            render(
                chart,
                {"ledger": {"url": EXTERNAL_LEDGER}, "config": {"ledger": {"spill_dir": bad}}},
            )


def test_ingress_with_tls(chart: helm.Chart) -> None:
    assert render(chart).maybe("Ingress") is None
    rendered = render(chart, values_of("full"))
    ingress = rendered.one("Ingress")["spec"]
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == [
        {"secretName": "rerank-example-com-tls", "hosts": ["rerank.example.com"]}
    ]
    (rule,) = ingress["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert rule["host"] == "rerank.example.com"
    assert backend == {"name": FULLNAME, "port": {"name": "http"}}
    assert rendered.one("Service")["spec"]["ports"][0]["name"] == "http"
    assert "https://rerank.example.com/v2/rerank" in rendered.notes
    with pytest.raises(helm.HelmRenderError, match=r"needs at least one entry in ingress\.hosts"):
        render(chart, {"ingress": {"enabled": True}})


# --------------------------------------------------------------------------------------
# Grafana dashboard

METRIC_LABELS = {
    "rerank_requests_total": {"team", "model", "status"},
    "rerank_request_duration_seconds": {"model"},
    "rerank_upstream_duration_seconds": {"deployment"},
    "rerank_upstream_errors_total": {"deployment", "kind"},
    "rerank_in_flight_requests": set(),
    "rerank_cache_lookups_total": {"result"},
    "rerank_search_units_total": {"team", "model", "deployment"},
    "rerank_cost_usd_total": {"team", "model", "deployment"},
    "rerank_breaker_state": {"deployment"},
    "rerank_ratelimit_rejections_total": {"team", "limit"},
}
HISTOGRAMS = {"rerank_request_duration_seconds", "rerank_upstream_duration_seconds"}


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_dashboard_configmap(chart: helm.Chart) -> None:
    files = sorted(CHART.glob("dashboards/*.json"))
    assert [f.name for f in files] == ["rerank-gateway.json"]
    rendered = render(chart)
    maps = [
        d
        for d in rendered.all("ConfigMap")
        if d["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    (dashboard_map,) = maps
    assert json.loads(dashboard_map["data"]["rerank-gateway.json"]) == json.loads(
        files[0].read_text()
    )
    elsewhere = render(chart, {"dashboards": {"namespace": "monitoring"}})
    assert any(d["metadata"]["namespace"] == "monitoring" for d in elsewhere.all("ConfigMap"))
    assert len(render(chart, {"dashboards": {"enabled": False}}).all("ConfigMap")) == 1


def test_dashboard_queries_use_the_gateway_metrics() -> None:
    text = (CHART / "dashboards" / "rerank-gateway.json").read_text()
    assert not re.search(r"(?i)todo|placeholder|xxx|changeme|lorem", text)
    dashboard = json.loads(text)
    panels = dashboard_panels(dashboard)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            names = set(re.findall(r"\brerank_[a-z_]+", expr))
            assert names, expr
            labels_available = {"le"}
            for name in names:
                base = name.removesuffix("_bucket") if name.endswith("_bucket") else name
                assert base in METRIC_LABELS, f"unknown metric {name} in {panel['title']!r}"
                assert (name != base) == (base in HISTOGRAMS), name
                used.add(base)
                labels_available |= METRIC_LABELS[base]
            for name, matchers in re.findall(r"\b(rerank_[a-z_]+)\{([^}]*)\}", expr):
                for label in re.findall(r"([a-z_]+)\s*(?:=~|!=|!~|=)", matchers):
                    assert label in METRIC_LABELS[name.removesuffix("_bucket")] | {"le"}, (
                        label,
                        expr,
                    )
            for group in re.findall(r"\bby \(([^)]*)\)", expr):
                for label in (g.strip() for g in group.split(",")):
                    assert label in labels_available, (label, expr)
    assert used == set(METRIC_LABELS)
    titles = " | ".join(p["title"] for p in panels)
    for needed in (
        "by status",
        "p50 / p99",
        "Upstream errors",
        "breaker",
        "In-flight",
        "Cost per team per day",
        "Search units",
        "Cache hit ratio",
    ):
        assert needed in titles, needed
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "team", "model"} <= variables
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24


# --------------------------------------------------------------------------------------
# NOTES, Dockerfile, packaging


def test_notes_render(chart: helm.Chart) -> None:
    notes = render(chart).notes
    assert f"http://{FULLNAME}.{NAMESPACE}.svc:8080/v2/rerank" in notes
    assert "terminationGracePeriodSeconds is 35" in notes
    clean = render(chart, values_of("providers")).notes
    assert "placeholder key digest" not in clean
    assert "without Redis" not in clean


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_matches_the_package_and_the_chart(chart: helm.Chart) -> None:
    instructions = dockerfile_instructions()
    stages = [rest for word, rest in instructions if word == "FROM"]
    assert len(stages) >= 2
    assert stages[-1].split()[0] == "python:3.11-slim"
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert "pip wheel" in runs and "--prefix" in runs
    # Every cloud SDK extra, never the test tools.
    assert "[dev]" not in runs and "'.[all]'" in runs and "'rerank-gateway[all]'" in runs
    last = {word: rest for word, rest in instructions}
    entrypoint = json.loads(last["ENTRYPOINT"])
    cmd = json.loads(last["CMD"])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["rerank-gateway"] and "rerank-gateway" in scripts
    assert last["EXPOSE"] == "8080"
    user = last["USER"].split(":")[0]
    rendered = render(chart)
    container = rendered.container
    assert container["command"] == entrypoint
    assert container["args"] == cmd
    assert cmd[:2] == ["serve", "--config"] and cmd[3:] == ["--host", "0.0.0.0"]
    # The CMD's config path is the file the chart mounts from its ConfigMap.
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    volume = next(v for v in rendered.pod_spec["volumes"] if v["name"] == "config")
    (item,) = volume["configMap"]["items"]
    assert volume["configMap"]["name"] == rendered.config_map["metadata"]["name"]
    assert f"{mount['mountPath']}/{item['path']}" == cmd[2] == "/etc/rerank-gateway/config.yaml"
    assert item["key"] in rendered.config_map["data"]
    assert int(user) == container["securityContext"]["runAsUser"] == 10001
    assert int(last["EXPOSE"]) == container["ports"][0]["containerPort"]


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    assert lines[lines.index("*")] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "gateway", "providers", "policies"}


def test_test_dependencies_are_in_the_dev_extra() -> None:
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "dev"
    ]
    names = {re.split(r"[<>=!~ \[;]", spec, maxsplit=1)[0].lower() for spec in dev}
    assert {"helm-python-sdk", "kubernetes-validate"} <= names


def test_dashboard_metrics_exist_in_the_gateway_with_those_labels() -> None:
    """The dashboard's metric names and labels are the ones the gateway really exports."""
    from gateway.observe.metrics import Metrics

    exported = Metrics().registry._names_to_collectors  # sample name -> its collector
    for name, labels in METRIC_LABELS.items():
        assert name in exported, f"the gateway exports no {name}"
        assert set(exported[name]._labelnames) == labels, name


def test_metrics_port_can_be_turned_off_or_moved(chart: helm.Chart) -> None:
    shared = render(chart, {"metrics": {"port": None, "serviceMonitor": {"enabled": True}}})
    assert "metrics_port" not in shared.config["server"]
    assert [p["name"] for p in shared.container["ports"]] == ["http"]
    assert shared.one("ServiceMonitor")["spec"]["endpoints"][0]["port"] == "http"
    moved = render(chart, {"metrics": {"port": 9464}})
    assert moved.config["server"]["metrics_port"] == 9464
    assert port_number(moved.container, "metrics") == 9464
    with pytest.raises(helm.HelmRenderError, match=r"set metrics\.port only"):
        render(chart, {"config": {"server": {"metrics_port": 9000}}})


def test_the_ingress_routes_only_the_rerank_api(chart: helm.Chart) -> None:
    assert not render(chart).all("Ingress")
    values = {
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "hosts": ["rerank.example.com"],
            "tls": [{"hosts": ["rerank.example.com"], "secretName": "rerank-tls"}],
        }
    }
    rendered = render(chart, values)
    ingress = rendered.one("Ingress")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "rerank.example.com"
    paths = rule["http"]["paths"]
    assert [(p["path"], p["pathType"]) for p in paths] == [
        ("/v2/rerank", "Exact"),
        ("/v1/rerank", "Exact"),
        ("/openapi.json", "Exact"),
    ]
    assert {p["backend"]["service"]["port"]["name"] for p in paths} == {"http"}
    for path in paths:
        assert not path["path"].startswith(("/metrics", "/admin"))
    assert ingress["spec"]["ingressClassName"] == "nginx"
    # An Ingress without a host is refused (see test_ingress_with_tls).


# --------------------------------------------------------------------------------------
# Example values files (helm/rerank-gateway/examples)


def test_offline_example_renders_a_gateway_with_no_cloud_and_no_internet(
    chart: helm.Chart,
) -> None:
    values = yaml.safe_load((CHART / "examples" / "offline-values.yaml").read_text())
    report = helm.lint(CHART, values, strict=True)
    assert report["errors"] == [], report
    rendered = render(chart, values)
    for doc in rendered.docs:
        kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)
    assert not ENV_REF.search(json.dumps(rendered.config))  # no secret to supply
    assert "envFrom" not in rendered.container
    config = gateway_parse(rendered.config, {})
    assert {p.type for p in config.providers.values()} == {"tei", "local"}
    assert config.models["bge-reranker-v2-m3"].fallback == "local"
    (policy,) = [p for p in rendered.all("NetworkPolicy") if "Egress" in p["spec"]["policyTypes"]]
    ports = [
        (port["port"], bool(rule.get("to")))
        for rule in policy["spec"]["egress"]
        for port in rule.get("ports") or [{"port": "any"}]
    ]
    # DNS anywhere, TEI's port only towards the TEI pods, and nothing else (no 443).
    assert sorted(ports, key=str) == [(53, False), (53, False), (80, True)]
