"""The Helm chart (helm/vkec2) rendered by the real ``helm`` binary, and its objects checked.

Every test renders with ``helm template`` (or ``helm lint`` / ``helm install --dry-run=client``), parses the
multi-document YAML and asserts on the objects: the producer StatefulSet and its RBAC, workers without any
Kubernetes access, the ConfigMap's configuration as ``vkec2 config check`` sees it with each container's
environment, secrets, metrics, and values that must be refused with a clear message. Workload objects
also go through the real ``kubectl``: ``kubectl set env --local`` decodes them into the typed Kubernetes
objects offline, so a wrong type fails and a misspelt field is dropped (and then missed by the round-trip
comparison). ``kubectl create/apply --dry-run=client`` cannot be used: both need an API server for discovery.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from producer.main import build_parser as producer_parser
from producer.main import default_node_name
from tests.support.kubetools import helm_path, kubectl_path

Obj = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "vkec2"
RELEASE = "fleet"
NAMESPACE = "vkec2-system"
PREFIX = "fleet-vkec2"

#: What the producer may do with the API (docs/producer.md "RBAC", the deployment brief): exactly this.
PRODUCER_CLUSTER_RULES = {
    *(
        ("", res, verb)
        for res in ("nodes", "nodes/status")
        for verb in ("create", "get", "list", "watch", "patch", "update")
    ),
    *(("", "pods", verb) for verb in ("get", "list", "watch", "delete", "patch")),
    ("", "pods/status", "update"),
    ("", "pods/status", "patch"),
    ("", "events", "create"),
    ("", "events", "patch"),
}
PRODUCER_LEASE_RULES = {("coordination.k8s.io", "leases", verb) for verb in ("create", "get", "update")}

PROD_VALUES: Obj = {
    "image": {"repository": "registry.example/vkec2", "tag": "1.2.3"},
    "config": {
        "cluster_name": "prod-macs",
        "region": "eu-west-1",
        "ec2": {"image_id": "ami-0abc", "instance_type": "mac2.metal", "subnets": ["subnet-0a", "subnet-0b"]},
        "warm_pools": [{"name": "mac", "instance_type": "mac2.metal", "desired_count": 2}],
        "health": {"interval_seconds": 20},
    },
    "nodeOS": "darwin",
    "redis": {"bundled": {"enabled": False}, "url": "rediss://:s3cret@redis.example:6380/2"},
    "agentTls": {"secretName": "vkec2-fleet-ca"},
    "aws": {"roleArn": "arn:aws:iam::123456789012:role/vkec2-workers"},
    "metrics": {"port": 9300, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "producer": {"replicas": 3},
    "worker": {"replicas": 4, "concurrency": 16},
    "flower": {"basicAuth": {"secretName": "flower-users", "secretKey": "users"}},
}


# --- running helm ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_path()


def _helm_env(tmp: Path) -> dict[str, str]:
    """helm with private dirs and no cluster: nothing from the developer's machine leaks in."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "HELM_CACHE_HOME": str(tmp / "cache"),
        "HELM_CONFIG_HOME": str(tmp / "config"),
        "HELM_DATA_HOME": str(tmp / "data"),
        "KUBECONFIG": str(tmp / "no-kubeconfig"),
    }


class Helm:
    def __init__(self, binary: Path, tmp: Path) -> None:
        self.binary = binary
        self.tmp = tmp
        self.env = _helm_env(tmp)
        self._files = 0

    def _values_args(self, values: Obj | None, sets: tuple[str, ...]) -> list[str]:
        args: list[str] = []
        if values is not None:
            self._files += 1
            path = self.tmp / f"values-{self._files}.yaml"
            path.write_text(yaml.safe_dump(values))
            args += ["-f", str(path)]
        for item in sets:
            args += ["--set", item]
        return args

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=self.env, timeout=60, check=False
        )

    def template_text(self, values: Obj | None = None, *sets: str, release: str = RELEASE) -> str:
        proc = self.run("template", release, str(CHART), "-n", NAMESPACE, *self._values_args(values, sets))
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def template(self, values: Obj | None = None, *sets: str, release: str = RELEASE) -> Objects:
        return Objects(self.template_text(values, *sets, release=release))

    def template_error(self, values: Obj | None = None, *sets: str) -> str:
        proc = self.run("template", RELEASE, str(CHART), "-n", NAMESPACE, *self._values_args(values, sets))
        assert proc.returncode != 0, f"helm template accepted {values} {sets}"
        return proc.stderr

    def lint(self, values: Obj | None = None, *sets: str) -> subprocess.CompletedProcess[str]:
        return self.run("lint", str(CHART), "--strict", *self._values_args(values, sets))

    def notes(self, values: Obj | None = None, *sets: str) -> str:
        proc = self.run(
            "install",
            RELEASE,
            str(CHART),
            "-n",
            NAMESPACE,
            "--dry-run=client",
            *self._values_args(values, sets),
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split("NOTES:", 1)[1]


@pytest.fixture
def h(helm: Path, tmp_path: Path) -> Helm:
    return Helm(helm, tmp_path)


class Objects:
    """The rendered objects, looked up by kind and name."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.items: list[Obj] = [doc for doc in yaml.safe_load_all(text) if doc]

    def __iter__(self) -> Iterator[Obj]:
        return iter(self.items)

    def kinds(self) -> set[tuple[str, str]]:
        return {(o["kind"], o["metadata"]["name"]) for o in self.items}

    def maybe(self, kind: str, name: str) -> Obj | None:
        found = [o for o in self.items if o["kind"] == kind and o["metadata"]["name"] == name]
        assert len(found) <= 1, f"{kind}/{name} rendered {len(found)} times"
        return found[0] if found else None

    def get(self, kind: str, name: str) -> Obj:
        obj = self.maybe(kind, name)
        assert obj is not None, f"{kind}/{name} not rendered; have {sorted(self.kinds())}"
        return obj

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.items if o["kind"] == kind]

    def workloads(self) -> list[Obj]:
        return [o for o in self.items if o["kind"] in ("Deployment", "StatefulSet")]


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def container(workload: Obj, name: str | None = None) -> Obj:
    containers: list[Obj] = pod_spec(workload)["containers"]
    if name is None:
        assert len(containers) == 1
        return containers[0]
    return next(c for c in containers if c["name"] == name)


def env_of(c: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in c.get("env", [])}


def literal_env(c: Obj) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def config_of(objs: Objects) -> str:
    data: str = objs.get("ConfigMap", f"{PREFIX}-config")["data"]["config.yaml"]
    return data


def fleet_workloads(objs: Objects) -> list[Obj]:
    """Workloads running the vkec2 image (everything but the bundled Redis)."""
    return [w for w in objs.workloads() if w["metadata"]["name"] != f"{PREFIX}-redis"]


# --- lint and what is rendered ------------------------------------------------------------------------


def test_lint_passes_with_defaults_and_a_production_set_up(h: Helm) -> None:
    for values in (None, PROD_VALUES):
        proc = h.lint(values)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "0 chart(s) failed" in proc.stdout


def test_default_values_render_the_whole_fleet(h: Helm) -> None:
    objs = h.template()
    expected = {
        ("ServiceAccount", f"{PREFIX}-producer"),
        ("ServiceAccount", f"{PREFIX}-worker"),
        ("ServiceAccount", f"{PREFIX}-support"),
        ("ClusterRole", f"{PREFIX}-producer"),
        ("ClusterRoleBinding", f"{PREFIX}-producer"),
        ("Role", f"{PREFIX}-producer-lease"),
        ("RoleBinding", f"{PREFIX}-producer-lease"),
        ("ConfigMap", f"{PREFIX}-config"),
        ("Secret", f"{PREFIX}-flower-auth"),
        ("StatefulSet", f"{PREFIX}-producer"),
        ("Service", f"{PREFIX}-producer"),
        ("Deployment", f"{PREFIX}-worker"),
        ("Service", f"{PREFIX}-worker-metrics"),
        ("Deployment", f"{PREFIX}-beat"),
        ("Deployment", f"{PREFIX}-flower"),
        ("Service", f"{PREFIX}-flower"),
        ("Deployment", f"{PREFIX}-redis"),
        ("Service", f"{PREFIX}-redis"),
    }
    assert objs.kinds() == expected
    for obj in objs:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    # Selectors pick exactly their own component's pods.
    components = set()
    for w in objs.workloads():
        selector = w["spec"]["selector"]["matchLabels"]
        assert selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        components.add(selector["app.kubernetes.io/component"])
    assert components == {"producer", "worker", "beat", "flower", "redis"}


def test_replica_counts_and_image_come_from_values(h: Helm) -> None:
    objs = h.template(PROD_VALUES, "beat.replicas=3", "flower.replicas=0")
    assert objs.get("StatefulSet", f"{PREFIX}-producer")["spec"]["replicas"] == 3
    assert objs.get("Deployment", f"{PREFIX}-worker")["spec"]["replicas"] == 4
    assert objs.get("Deployment", f"{PREFIX}-beat")["spec"]["replicas"] == 3
    assert objs.get("Deployment", f"{PREFIX}-flower")["spec"]["replicas"] == 0
    for w in fleet_workloads(objs):
        assert container(w)["image"] == "registry.example/vkec2:1.2.3"
    default = h.template()
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container(default.get("Deployment", f"{PREFIX}-worker"))["image"] == f"vkec2:{app_version}"


# --- the producer ------------------------------------------------------------------------------------


def test_producer_statefulset_is_a_virtual_node(h: Helm) -> None:
    objs = h.template(None, "producer.replicas=2")
    sts = objs.get("StatefulSet", f"{PREFIX}-producer")
    svc = objs.get("Service", f"{PREFIX}-producer")
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]

    c = container(sts, "producer")
    env = env_of(c)
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["kubelet"] == 10250
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert svc_ports["kubelet"]["port"] == 10250 and svc_ports["kubelet"]["targetPort"] == "kubelet"

    # The command line is one the producer's own parser accepts.
    assert c["command"] == ["vkec2", "producer"]
    ns = producer_parser().parse_args(c["args"])
    assert ns.in_cluster and ns.manifests is None
    assert ns.config == literal_env(c)["VKEC2_CONFIG"]

    spec = pod_spec(sts)
    assert spec["serviceAccountName"] == f"{PREFIX}-producer"
    assert spec["automountServiceAccountToken"] is True

    # The kubelet port follows the value, in the container, the Service and the node's config.
    moved = h.template(None, "producer.kubeletPort=11250")
    c = container(moved.get("StatefulSet", f"{PREFIX}-producer"))
    assert {p["name"]: p["containerPort"] for p in c["ports"]}["kubelet"] == 11250
    assert yaml.safe_load(config_of(moved))["node"]["kubelet_port"] == 11250


def test_node_names_in_notes_are_the_ones_the_producers_derive(h: Helm) -> None:
    notes = h.notes(None, "producer.replicas=3", "config.cluster_name=Prod.Macs_EU")
    sts_name = f"{PREFIX}-producer"
    expected = [default_node_name("Prod.Macs_EU", {"POD_NAME": f"{sts_name}-{i}"}) for i in range(3)]
    assert f"Virtual nodes (3): {', '.join(expected)}" in notes
    # Defaults warn about what must not stay that way in production.
    assert "bundled Redis" in notes and "plaintext" in notes
    quiet = h.notes(PROD_VALUES)
    assert "bundled Redis" not in quiet and "plaintext" not in quiet and "aws.roleArn is empty" not in quiet


def _code_api_calls() -> set[tuple[str, str]]:
    """(resource, verb) of every Kubernetes client call in producer/ (read_node -> nodes get, ...)."""
    verbs = {
        "read": "get",
        "create": "create",
        "replace": "update",
        "patch": "patch",
        "delete": "delete",
        "list": "list",
    }
    pattern = re.compile(
        r"\.(read|create|replace|patch|delete|list)_(?:namespaced_)?(node|pod|event|lease)(_status)?"
        r"(?:_for_all_namespaces)?\("
    )
    calls: set[tuple[str, str]] = set()
    for path in (ROOT / "producer").glob("*.py"):
        for verb, resource, status in pattern.findall(path.read_text()):
            calls.add((f"{resource}s" + ("/status" if status else ""), verbs[verb]))
    return calls


def _rules(role: Obj) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_rbac_grants_exactly_what_the_producer_needs(h: Helm) -> None:
    objs = h.template()
    cluster_role = objs.get("ClusterRole", f"{PREFIX}-producer")
    lease_role = objs.get("Role", f"{PREFIX}-producer-lease")
    assert _rules(cluster_role) == PRODUCER_CLUSTER_RULES
    assert lease_role["metadata"]["namespace"] == "kube-node-lease"
    assert _rules(lease_role) == PRODUCER_LEASE_RULES
    assert not any(rule.get("resourceNames") == [] for rule in cluster_role["rules"])

    producer_subject = [{"kind": "ServiceAccount", "name": f"{PREFIX}-producer", "namespace": NAMESPACE}]
    crb = objs.get("ClusterRoleBinding", f"{PREFIX}-producer")
    assert crb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": f"{PREFIX}-producer",
    }
    assert crb["subjects"] == producer_subject
    rb = objs.get("RoleBinding", f"{PREFIX}-producer-lease")
    assert rb["metadata"]["namespace"] == "kube-node-lease"
    assert rb["roleRef"]["kind"] == "Role" and rb["roleRef"]["name"] == f"{PREFIX}-producer-lease"
    assert rb["subjects"] == producer_subject

    # Every call the producer's code makes is granted (a new call without its rule fails here).
    calls = _code_api_calls()
    assert ("nodes", "create") in calls and ("leases", "update") in calls, calls  # the scan finds calls
    granted = {(res, verb) for _, res, verb in PRODUCER_CLUSTER_RULES | PRODUCER_LEASE_RULES}
    assert calls <= granted, sorted(calls - granted)
    assert ("pods", "watch") in granted

    assert not h.template(None, "rbac.create=false").of_kind("ClusterRole")


def test_workers_beat_and_flower_have_no_kubernetes_access(h: Helm) -> None:
    objs = h.template(PROD_VALUES)
    bound = {
        (s["kind"], s["name"])
        for kind in ("RoleBinding", "ClusterRoleBinding")
        for binding in objs.of_kind(kind)
        for s in binding["subjects"]
    }
    assert bound == {("ServiceAccount", f"{PREFIX}-producer")}
    for name in ("worker", "support"):
        sa = objs.get("ServiceAccount", f"{PREFIX}-{name}")
        assert sa["automountServiceAccountToken"] is False
    accounts = {}
    for w in objs.workloads():
        spec = pod_spec(w)
        accounts[w["metadata"]["name"]] = spec["serviceAccountName"]
        if w["kind"] != "StatefulSet":
            assert spec["automountServiceAccountToken"] is False, w["metadata"]["name"]
    assert accounts[f"{PREFIX}-worker"] == f"{PREFIX}-worker"
    assert accounts[f"{PREFIX}-beat"] == accounts[f"{PREFIX}-flower"] == f"{PREFIX}-support"
    assert accounts[f"{PREFIX}-producer"] == f"{PREFIX}-producer"


def test_irsa_role_annotates_only_the_worker_service_account(h: Helm) -> None:
    objs = h.template(PROD_VALUES)
    role = PROD_VALUES["aws"]["roleArn"]
    assert objs.get("ServiceAccount", f"{PREFIX}-worker")["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": role
    }
    for name in ("producer", "support"):
        assert "annotations" not in objs.get("ServiceAccount", f"{PREFIX}-{name}")["metadata"]
    plain = h.template()
    assert "annotations" not in plain.get("ServiceAccount", f"{PREFIX}-worker")["metadata"]


# --- configuration -----------------------------------------------------------------------------------


def _config_check(config_text: str, env: dict[str, str], tmp: Path) -> subprocess.CompletedProcess[str]:
    path = tmp / "config.yaml"
    path.write_text(config_text)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VKEC2_")}
    return subprocess.run(
        [sys.executable, "-m", "vkec2.cli", "config", "check", str(path), "-o", "json"],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=ROOT,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("values", [None, PROD_VALUES], ids=["defaults", "production"])
def test_configmap_passes_config_check_in_every_container(
    h: Helm, tmp_path: Path, values: Obj | None
) -> None:
    objs = h.template(values)
    text = config_of(objs)
    cm_name = f"{PREFIX}-config"
    environments: dict[frozenset[tuple[str, str]], str] = {}
    for w in fleet_workloads(objs):
        c = container(w)
        env = literal_env(c)
        # VKEC2_CONFIG names the ConfigMap's key where the ConfigMap is mounted.
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(w)["volumes"]}
        assert volumes["config"]["configMap"]["name"] == cm_name
        assert env.pop("VKEC2_CONFIG") == f"{mounts['config']}/config.yaml"
        if values is None:
            assert env["VKEC2_REDIS_URL"] == f"redis://{PREFIX}-redis:6379/0"
        # Secret-held values (the Redis URL) get a stand-in; every literal VKEC2_* value is checked.
        for name, entry in env_of(c).items():
            if "valueFrom" in entry and "secretKeyRef" in entry["valueFrom"]:
                env[name] = "redis://:stand-in@redis.example:6379/0"
        environments.setdefault(frozenset(env.items()), w["metadata"]["name"])
    assert len(environments) >= 2  # the producer/workers (metrics) and beat/Flower differ
    for env_items, workload in environments.items():  # one check per distinct environment
        proc = _config_check(text, dict(env_items), tmp_path)
        assert proc.returncode == 0, f"{workload}: {proc.stderr}"
        effective = json.loads(proc.stdout)
        expected = values or {}
        assert effective["cluster_name"] == expected.get("config", {}).get("cluster_name", "vkec2")
        assert effective["node"]["os"] == expected.get("nodeOS", "linux")
        assert effective["node"]["kubelet_port"] == 10250
        if values is not None:
            assert effective["ec2"]["subnets"] == ["subnet-0a", "subnet-0b"]
            assert effective["warm_pools"][0]["name"] == "mac"


def test_a_bad_configuration_renders_but_config_check_names_the_key(h: Helm, tmp_path: Path) -> None:
    objs = h.template(None, "config.agent.port=70000")
    proc = _config_check(config_of(objs), {}, tmp_path)
    assert proc.returncode == 1
    assert "agent.port" in proc.stderr


def test_fleet_ca_is_mounted_into_workers_only(h: Helm, tmp_path: Path) -> None:
    objs = h.template(PROD_VALUES, "agentTls.certKey=ca.pem", "agentTls.keyKey=ca-key.pem")
    worker = objs.get("Deployment", f"{PREFIX}-worker")
    c = container(worker)
    tls = json.loads(literal_env(c)["VKEC2_AGENT__TLS"])
    mount = next(m for m in c["volumeMounts"] if m["name"] == "fleet-ca")
    volume = next(v for v in pod_spec(worker)["volumes"] if v["name"] == "fleet-ca")
    assert volume["secret"]["secretName"] == "vkec2-fleet-ca"
    files = {f"{mount['mountPath']}/{item['path']}": item["key"] for item in volume["secret"]["items"]}
    assert files == {tls["ca_cert_file"]: "ca.pem", tls["ca_key_file"]: "ca-key.pem"}
    # The effective configuration of a worker has agent.tls pointing at those files.
    env = {**literal_env(c), "VKEC2_REDIS_URL": "redis://r:6379/0"}
    env.pop("VKEC2_CONFIG")
    proc = _config_check(config_of(objs), env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["agent"]["tls"]["ca_key_file"] == tls["ca_key_file"]
    # The CA key reaches no other pod.
    for w in objs.workloads():
        if w is worker:
            continue
        assert all(
            "secret" not in v or v["secret"]["secretName"] != "vkec2-fleet-ca"
            for v in pod_spec(w).get("volumes", [])
        )
        assert "VKEC2_AGENT__TLS" not in env_of(container(w))
    assert "VKEC2_AGENT__TLS" not in env_of(container(h.template().get("Deployment", f"{PREFIX}-worker")))


def test_config_changes_roll_the_pods(h: Helm) -> None:
    def checksums(objs: Objects) -> set[str]:
        return {
            w["spec"]["template"]["metadata"]["annotations"]["checksum/config"] for w in fleet_workloads(objs)
        }

    before = checksums(h.template())
    after = checksums(h.template(None, "config.health.interval_seconds=30"))
    assert len(before) == len(after) == 1
    assert before != after


# --- Redis, Flower, metrics ---------------------------------------------------------------------------


def _redis_env(objs: Objects) -> list[Obj]:
    return [env_of(container(w))["VKEC2_REDIS_URL"] for w in fleet_workloads(objs)]


def test_external_redis_url_is_kept_in_a_secret(h: Helm) -> None:
    objs = h.template(PROD_VALUES)
    assert objs.maybe("Deployment", f"{PREFIX}-redis") is None
    secret = objs.get("Secret", f"{PREFIX}-redis")
    assert secret["stringData"] == {"redis-url": PROD_VALUES["redis"]["url"]}
    refs = _redis_env(objs)
    assert len(refs) == 4
    for ref in refs:
        assert ref == {
            "name": "VKEC2_REDIS_URL",
            "valueFrom": {"secretKeyRef": {"name": f"{PREFIX}-redis", "key": "redis-url"}},
        }
    # The password never appears outside the Secret.
    assert objs.text.count("s3cret") == 1

    existing = h.template(
        None,
        "redis.bundled.enabled=false",
        "redis.existingSecret.name=shared-redis",
        "redis.existingSecret.key=url",
    )
    assert existing.maybe("Secret", f"{PREFIX}-redis") is None
    for ref in _redis_env(existing):
        assert ref["valueFrom"]["secretKeyRef"] == {"name": "shared-redis", "key": "url"}


def test_bundled_redis_is_reachable_under_the_url_the_fleet_uses(h: Helm) -> None:
    objs = h.template()
    svc = objs.get("Service", f"{PREFIX}-redis")
    deploy = objs.get("Deployment", f"{PREFIX}-redis")
    assert svc["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["port"] == 6379
    for ref in _redis_env(objs):
        assert ref["value"] == f"redis://{svc['metadata']['name']}:6379/0"


def test_flower_requires_basic_auth(h: Helm) -> None:
    objs = h.template()
    flower = objs.get("Deployment", f"{PREFIX}-flower")
    c = container(flower)
    assert c["command"] == ["celery"] and c["args"][:3] == ["-A", "tasks", "flower"]
    ref = env_of(c)["FLOWER_BASIC_AUTH"]["valueFrom"]["secretKeyRef"]
    secret = objs.get("Secret", ref["name"])
    user, _, password = base64.b64decode(secret["data"][ref["key"]]).decode().partition(":")
    assert user == "admin" and len(password) == 24 and password.isalnum()
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthcheck"
    svc = objs.get("Service", f"{PREFIX}-flower")
    assert svc["spec"]["selector"] == flower["spec"]["selector"]["matchLabels"]

    own = h.template(PROD_VALUES)
    assert own.maybe("Secret", f"{PREFIX}-flower-auth") is None
    ref = env_of(container(own.get("Deployment", f"{PREFIX}-flower")))["FLOWER_BASIC_AUTH"]
    assert ref["valueFrom"]["secretKeyRef"] == {"name": "flower-users", "key": "users"}

    off = h.template(None, "flower.enabled=false")
    assert not [k for k in off.kinds() if "flower" in k[1]]


def test_metrics_port_and_service_monitor(h: Helm) -> None:
    objs = h.template(PROD_VALUES)
    for name in ("worker", "producer"):
        w = next(w for w in objs.workloads() if w["metadata"]["name"] == f"{PREFIX}-{name}")
        c = container(w)
        assert literal_env(c)["VKEC2_METRICS__PORT"] == "9300"
        assert {"name": "metrics", "containerPort": 9300, "protocol": "TCP"} in c["ports"]
    monitor = objs.get("ServiceMonitor", PREFIX)
    assert monitor["metadata"]["labels"]["release"] == "prom"
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = {
        s["metadata"]["name"]
        for s in objs.of_kind("Service")
        if selector.items() <= s["metadata"]["labels"].items()
    }
    assert scraped == {f"{PREFIX}-producer", f"{PREFIX}-worker-metrics"}
    for name in scraped:
        ports = {p["name"]: p["port"] for p in objs.get("Service", name)["spec"]["ports"]}
        assert ports["metrics"] == 9300
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"

    assert h.template().maybe("ServiceMonitor", PREFIX) is None
    off = h.template(None, "metrics.enabled=false")
    assert off.maybe("Service", f"{PREFIX}-worker-metrics") is None
    for w in fleet_workloads(off):
        c = container(w)
        assert "VKEC2_METRICS__PORT" not in env_of(c)
        assert all(p["name"] != "metrics" for p in c.get("ports", []))


def test_celery_command_lines(h: Helm) -> None:
    from vkec2.contract import QUEUES

    objs = h.template(None, "worker.concurrency=12", "worker.queues={pods,health}")
    worker = container(objs.get("Deployment", f"{PREFIX}-worker"))
    assert worker["command"] == ["celery"]
    assert worker["args"][:9] == ["-A", "tasks", "worker", "-Q", "pods,health", "-P", "threads", "-c", "12"]
    default = container(h.template().get("Deployment", f"{PREFIX}-worker"))
    assert default["args"][4] == ",".join(QUEUES)
    beat = container(objs.get("Deployment", f"{PREFIX}-beat"))
    assert beat["args"][:5] == ["-A", "tasks", "beat", "-S", "redbeat.RedBeatScheduler"]
    assert objs.get("Deployment", f"{PREFIX}-beat")["spec"]["replicas"] == 2


def test_pods_run_as_non_root_with_a_read_only_root(h: Helm) -> None:
    for w in h.template().workloads():
        assert pod_spec(w)["securityContext"]["runAsNonRoot"] is True
        c = container(w)
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        if w["metadata"]["name"] != f"{PREFIX}-redis":
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]


def test_long_release_names_give_valid_object_and_pod_names(h: Helm) -> None:
    release = "a-very-long-release-name-for-a-fleet-of-mac-builders"
    objs = h.template(None, release=release)
    label = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
    for obj in objs:
        name = obj["metadata"]["name"]
        assert len(name) <= 63 and label.fullmatch(name), name
    sts = objs.of_kind("StatefulSet")[0]["metadata"]["name"]
    assert len(f"{sts}-999") <= 63


# --- refused values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("producer.replicas=-1",), "/producer/replicas"),
        (("worker.replicas=-3",), "/worker/replicas"),
        (("worker.concurrency=0",), "/worker/concurrency"),
        (("bogus=1",), "additional properties 'bogus' not allowed"),
        (("worker.replica=2",), "additional properties 'replica' not allowed"),
        (("nodeOS=windows",), "/nodeOS"),
        (("worker.queues={pods,gpu}",), "/worker/queues"),
        (("metrics.port=70000",), "/metrics/port"),
        (("redis.url=http://redis:6379",), "/redis/url"),
        (("aws.roleArn=my-role",), "/aws/roleArn"),
        (("redis.bundled.enabled=false",), "no Redis configured"),
        (("redis.url=redis://r:6379/0",), "redis.bundled.enabled is true but an external Redis"),
        (
            ("redis.bundled.enabled=false", "redis.url=redis://r:6379/0", "redis.existingSecret.name=s"),
            "either redis.url or redis.existingSecret.name",
        ),
        (("config.redis_url=redis://r:6379/0",), "config.redis_url: set redis.url"),
        (("config.agent.tls.ca_cert_file=/ca.pem",), "config.agent.tls: set agentTls.secretName"),
        (("config.node.os=darwin",), "config.node.os (darwin) contradicts nodeOS (linux)"),
        (
            ("config.node.name=mac", "producer.replicas=2"),
            "all 2 producer replicas would register the same node",
        ),
        (("metrics.port=10250",), "metrics.port and producer.kubeletPort must differ"),
    ],
)
def test_bad_values_fail_with_a_clear_message(h: Helm, sets: tuple[str, ...], message: str) -> None:
    assert message in h.template_error(None, *sets)


def test_lint_fails_on_bad_values_too(h: Helm) -> None:
    proc = h.lint(None, "producer.replicas=-1")
    assert proc.returncode != 0
    assert "/producer/replicas" in proc.stdout + proc.stderr


def test_a_single_named_node_is_allowed(h: Helm) -> None:
    objs = h.template(None, "config.node.name=mac-builders")
    assert yaml.safe_load(config_of(objs))["node"]["name"] == "mac-builders"
    assert "Virtual nodes (1): mac-builders" in h.notes(None, "config.node.name=mac-builders")


# --- kubectl --------------------------------------------------------------------------------------------


def _missing(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Paths of ``expected`` that ``actual`` lacks or holds with another value."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [path or "/"]
        return [m for k, v in expected.items() for m in _missing(v, actual.get(k, _ABSENT), f"{path}/{k}")]
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) < len(expected):
            return [path]
        return [m for i, v in enumerate(expected) for m in _missing(v, actual[i], f"{path}/{i}")]
    return [] if expected == actual else [path]


_ABSENT = object()


def _kubectl_typed(source: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    """``kubectl set env --local``: decodes each workload into its typed object and prints it back."""
    return subprocess.run(
        [
            str(kubectl_path()),
            "set",
            "env",
            "--local",
            "-f",
            str(source),
            "VKEC2_KUBECTL_CHECK=1",
            "-o",
            "yaml",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp), "KUBECONFIG": str(tmp / "none")},
    )


@pytest.mark.parametrize("values", [None, PROD_VALUES], ids=["defaults", "production"])
def test_workloads_decode_as_typed_kubernetes_objects(h: Helm, tmp_path: Path, values: Obj | None) -> None:
    workloads = h.template(values).workloads()
    source = tmp_path / "workloads.yaml"
    source.write_text(yaml.safe_dump_all(workloads))
    proc = _kubectl_typed(source, tmp_path)
    assert proc.returncode == 0, proc.stderr
    decoded = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    assert [(d["kind"], d["metadata"]["name"]) for d in decoded] == [
        (w["kind"], w["metadata"]["name"]) for w in workloads
    ]
    for original, typed in zip(workloads, decoded, strict=True):
        assert _missing(original, typed) == [], original["metadata"]["name"]


def test_the_typed_round_trip_catches_a_misspelt_field(h: Helm, tmp_path: Path) -> None:
    worker = h.template().get("Deployment", f"{PREFIX}-worker")
    pod_spec(worker)["serviceAcountName"] = "typo"
    source = tmp_path / "typo.yaml"
    source.write_text(yaml.safe_dump(worker))
    proc = _kubectl_typed(source, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _missing(worker, yaml.safe_load(proc.stdout)) == ["/spec/template/spec/serviceAcountName"]


# --- docs/deployment.md ---------------------------------------------------------------------------------


def test_documented_worker_policy_covers_every_aws_call_of_the_fleet() -> None:
    text = (ROOT / "docs" / "deployment.md").read_text()
    block = re.search(r"### IAM policy of the workers.*?```json\n(.*?)```", text, re.S)
    assert block is not None
    policy = json.loads(block.group(1))
    granted = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"]
        granted |= {actions} if isinstance(actions, str) else set(actions)
    # The EC2 gateway names each call it makes (self._call("RunInstances", ...)); quotas use Service Quotas.
    ec2_calls = set(re.findall(r'_call\(\s*"(\w+)"', (ROOT / "vkec2" / "ec2" / "gateway.py").read_text()))
    assert {"RunInstances", "CreateTags", "TerminateInstances"} <= ec2_calls
    needed = {f"ec2:{call}" for call in ec2_calls} | {"servicequotas:GetServiceQuota", "iam:PassRole"}
    assert needed <= granted, sorted(needed - granted)
    assert "s3:GetObject" in granted
