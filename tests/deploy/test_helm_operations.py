"""Operating the chart: probes, PodDisruptionBudgets, worker autoscaling and schema-valid objects.

Five value sets (defaults, KEDA autoscaling, the in-chart Redis tuned, an external Redis Sentinel, HA
beat with an HPA) are rendered once per module with the real ``helm``; every rendered object is
validated against the Kubernetes 1.30 OpenAPI schemas (``kubernetes-validate``, strict: unknown
fields fail). Custom resources (KEDA, prometheus-operator, cert-manager) have no schema there and are
checked by kind against the few fields the chart relies on.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.support.helm import PREFIX, PROD_VALUES, Helm, Objects, container, pod_spec

Obj = dict[str, Any]

K8S_VERSION = "1.30.0"

#: Kinds of custom resources the chart may render: API version and required spec fields.
CUSTOM_KINDS = {
    "ScaledObject": ("keda.sh/v1alpha1", {"scaleTargetRef", "triggers"}),
    "TriggerAuthentication": ("keda.sh/v1alpha1", {"secretTargetRef"}),
    "ServiceMonitor": ("monitoring.coreos.com/v1", {"selector", "endpoints"}),
    "Certificate": ("cert-manager.io/v1", {"secretName", "issuerRef"}),
    "Issuer": ("cert-manager.io/v1", set()),
}

SENTINEL_URL = "sentinel://:s3cret@s1.example:26379/0;sentinel://s2.example:26379"

VALUE_SETS: dict[str, Obj | None] = {
    "default": None,
    "keda": {
        **copy.deepcopy(PROD_VALUES),
        "autoscaling": {
            "mode": "keda",
            "minReplicas": 1,
            "maxReplicas": 12,
            "queues": ["pods", "health"],
            "keda": {
                "address": "redis.example:6380",
                "passwordSecret": {"name": "redis-pass", "key": "pw"},
                "databaseIndex": 2,
                "enableTLS": True,
            },
        },
    },
    "in-chart-redis": {
        "redis": {"bundled": {"enabled": True, "auth": {"existingSecret": "my-redis", "key": "pw"}}},
        "autoscaling": {"mode": "keda"},
        "flower": {"pdb": {"enabled": False}},
        "worker": {"pdb": {"maxUnavailable": "25%"}},
    },
    "sentinel": {
        "redis": {"bundled": {"enabled": False}, "url": SENTINEL_URL},
        "config": {"cluster_name": "vkec2", "region": "us-west-2", "redis_sentinel_master": "main"},
        "metrics": {"serviceMonitor": {"enabled": True}},
        "agentTls": {"certManager": {"enabled": True}},
    },
    "ha-beat": {
        "beat": {"replicas": 3, "pdb": {"maxUnavailable": None, "minAvailable": 2}},
        "producer": {"replicas": 4, "probes": {"liveness": {"periodSeconds": 7}}},
        "autoscaling": {"mode": "hpa", "minReplicas": 3, "maxReplicas": 9, "targetQueueLength": 5},
    },
}


@pytest.fixture(scope="module")
def rendered(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Objects]:
    runner = Helm(helm, tmp_path_factory.mktemp("helm-ops"))
    return {name: runner.template(values) for name, values in VALUE_SETS.items()}


def _containers(objs: Objects) -> list[tuple[str, Obj]]:
    return [(w["metadata"]["name"], c) for w in objs.workloads() for c in pod_spec(w)["containers"]]


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_rendered_object_is_valid_for_kubernetes(rendered: dict[str, Objects], name: str) -> None:
    custom = []
    for obj in rendered[name]:
        kind = obj["kind"]
        if kind in CUSTOM_KINDS:  # no schema in kubernetes-validate: the fields the chart relies on
            api, fields = CUSTOM_KINDS[kind]
            assert obj["apiVersion"] == api, obj["metadata"]
            assert fields <= set(obj["spec"]), (kind, obj["spec"])
            custom.append(kind)
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind}/{obj['metadata']['name']} ({name}): {exc.message} at {list(exc.path)}")
    expected_custom = {"keda": {"ScaledObject", "TriggerAuthentication", "ServiceMonitor"}}.get(name)
    if expected_custom is not None:
        assert expected_custom <= set(custom)


def test_every_container_has_liveness_and_readiness_probes(rendered: dict[str, Objects]) -> None:
    for name, objs in rendered.items():
        for workload, c in _containers(objs):
            for kind in ("livenessProbe", "readinessProbe"):
                probe = c.get(kind)
                assert probe and {"periodSeconds", "timeoutSeconds"} <= set(probe), (name, workload, kind)

    objs = rendered["default"]
    worker = container(objs.get("Deployment", f"{PREFIX}-worker"))
    ping = " ".join(worker["livenessProbe"]["exec"]["command"])
    assert (
        "celery -A tasks inspect ping" in ping and '"celery@${HOSTNAME}"' in ping and "--timeout 10" in ping
    )
    assert worker["livenessProbe"]["timeoutSeconds"] > 10  # the probe outlives the ping's own timeout
    assert worker["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    producer = container(objs.get("StatefulSet", f"{PREFIX}-producer"))
    assert producer["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "kubelet", "scheme": "HTTPS"}
    flower = container(objs.get("Deployment", f"{PREFIX}-flower"))
    assert flower["livenessProbe"]["httpGet"]["path"] == "/healthcheck"
    redis = container(objs.get("Deployment", f"{PREFIX}-redis"))
    assert redis["readinessProbe"]["exec"]["command"][-1] == 'test "$(redis-cli ping)" = PONG'
    assert "REDISCLI_AUTH" in {e["name"] for e in redis["env"]}  # the ping authenticates
    beat = container(objs.get("Deployment", f"{PREFIX}-beat"))
    assert "redis.ping()" in beat["livenessProbe"]["exec"]["command"][-1]

    tuned = container(rendered["ha-beat"].get("StatefulSet", f"{PREFIX}-producer"))
    assert tuned["livenessProbe"]["periodSeconds"] == 7
    assert tuned["livenessProbe"]["timeoutSeconds"] == 5  # the other defaults stay


def test_probes_can_be_replaced_or_turned_off(h: Helm) -> None:
    custom = {"tcpSocket": {"port": "metrics"}, "periodSeconds": 3}
    objs = h.template({"worker": {"livenessProbe": custom, "probes": {"enabled": False}}})
    worker = container(objs.get("Deployment", f"{PREFIX}-worker"))
    assert worker["livenessProbe"] == custom  # replaced entirely, no exec handler merged in
    assert "readinessProbe" not in worker  # the chart's probes are off
    # Without metrics there is no /healthz: readiness pings the worker instead.
    plain = container(h.template(None, "metrics.enabled=false").get("Deployment", f"{PREFIX}-worker"))
    assert "exec" in plain["readinessProbe"] and "httpGet" not in plain["readinessProbe"]


def _pdbs(objs: Objects) -> dict[str, Obj]:
    return {
        o["metadata"]["name"].removeprefix(f"{PREFIX}-"): o["spec"]
        for o in objs.of_kind("PodDisruptionBudget")
    }


def test_disruption_budgets_cover_every_component_and_select_its_pods(rendered: dict[str, Objects]) -> None:
    objs = rendered["default"]
    pdbs = _pdbs(objs)
    assert set(pdbs) == {"producer", "worker", "beat", "flower", "redis"}
    for component, spec in pdbs.items():
        workload = next(w for w in objs.workloads() if w["metadata"]["name"] == f"{PREFIX}-{component}")
        assert spec["selector"]["matchLabels"] == workload["spec"]["selector"]["matchLabels"]
    assert pdbs["worker"] == {**pdbs["worker"], "maxUnavailable": 1}
    assert pdbs["redis"]["minAvailable"] == 1  # not persistent: never evicted by a drain

    assert "flower" not in _pdbs(rendered["in-chart-redis"])
    assert _pdbs(rendered["in-chart-redis"])["worker"]["maxUnavailable"] == "25%"
    assert "redis" not in _pdbs(rendered["sentinel"])  # no bundled Redis, no budget for it
    beat = _pdbs(rendered["ha-beat"])["beat"]
    assert beat["minAvailable"] == 2 and "maxUnavailable" not in beat


def test_a_budget_with_both_bounds_is_refused(h: Helm) -> None:
    err = h.template_error({"producer": {"pdb": {"minAvailable": 1, "maxUnavailable": 1}}})
    assert "producer.pdb: set minAvailable or maxUnavailable, not both" in err


def test_keda_scales_workers_on_the_queue_lists_with_the_redis_password(rendered: dict[str, Objects]) -> None:
    objs = rendered["keda"]
    assert "replicas" not in objs.get("Deployment", f"{PREFIX}-worker")["spec"]  # the autoscaler's
    scaled = objs.get("ScaledObject", f"{PREFIX}-worker")["spec"]
    assert scaled["scaleTargetRef"] == {"name": f"{PREFIX}-worker"}
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1, 12)
    lists = [t["metadata"]["listName"] for t in scaled["triggers"]]
    assert lists == ["vkec2:prod-macs:celery:pods", "vkec2:prod-macs:celery:health"]
    trigger = scaled["triggers"][0]
    assert trigger["type"] == "redis"
    assert trigger["metadata"] | {"listName": "x"} == {
        "address": "redis.example:6380",
        "listName": "x",
        "listLength": "20",
        "databaseIndex": "2",
        "enableTLS": "true",
    }
    auth = objs.get("TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]
    assert auth["secretTargetRef"] == [{"parameter": "password", "name": "redis-pass", "key": "pw"}]

    bundled = rendered["in-chart-redis"]
    trigger = bundled.get("ScaledObject", f"{PREFIX}-worker")["spec"]["triggers"][0]
    assert trigger["metadata"]["address"] == f"{PREFIX}-redis.vkec2-system.svc:6379"
    auth = bundled.get("TriggerAuthentication", f"{PREFIX}-worker-redis")["spec"]
    assert auth["secretTargetRef"] == [{"parameter": "password", "name": "my-redis", "key": "pw"}]
    # KEDA's operator may reach the bundled Redis through its NetworkPolicy; without KEDA nobody else.
    ingress = bundled.get("NetworkPolicy", f"{PREFIX}-redis")["spec"]["ingress"]
    assert ingress[-1]["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}},
            "podSelector": {"matchLabels": {"app": "keda-operator"}},
        }
    ]
    assert len(rendered["default"].get("NetworkPolicy", f"{PREFIX}-redis")["spec"]["ingress"]) == 1


def test_hpa_scales_workers_on_the_exported_queue_length(rendered: dict[str, Objects]) -> None:
    hpa = rendered["ha-beat"].get("HorizontalPodAutoscaler", f"{PREFIX}-worker")["spec"]
    assert hpa["scaleTargetRef"]["name"] == f"{PREFIX}-worker"
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 9)
    (metric,) = hpa["metrics"]
    assert metric["external"]["metric"] == {
        "name": "vkec2_queue_length",
        "selector": {"matchLabels": {"queue": "pods"}},
    }
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "5"}
    default = rendered["default"]
    assert not default.of_kind("HorizontalPodAutoscaler") and not default.of_kind("ScaledObject")
    assert default.get("Deployment", f"{PREFIX}-worker")["spec"]["replicas"] == 2


def test_keda_with_an_external_redis_needs_its_address(h: Helm) -> None:
    err = h.template_error({**copy.deepcopy(PROD_VALUES), "autoscaling": {"mode": "keda"}})
    assert "autoscaling.keda.address" in err
    assert "minReplicas is above maxReplicas" in h.template_error(
        None, "autoscaling.mode=hpa", "autoscaling.minReplicas=5", "autoscaling.maxReplicas=2"
    )
    assert "autoscaling" in h.template_error(None, "autoscaling.mode=always")  # the schema's enum
    assert "needs metrics.enabled" in h.template_error(None, "autoscaling.mode=hpa", "metrics.enabled=false")
    # No workers, no budget for them.
    assert "worker" not in _pdbs(h.template(None, "worker.replicas=0"))
