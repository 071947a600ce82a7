"""The Helm chart (helm/vkec2) rendered by the real ``helm`` binary: what is rendered and what is refused.

Lint with defaults and a production set-up, the objects of the whole fleet, replica counts and images,
the producer StatefulSet as a virtual node, command lines, pod security, long release names, and
values that must fail with a clear message.
"""

from __future__ import annotations

import re

import pytest
import yaml

from producer.options import build_parser as producer_parser
from producer.options import default_node_name
from tests.support.helm import (
    CHART,
    NAMESPACE,
    PREFIX,
    PROD_VALUES,
    RELEASE,
    Helm,
    config_of,
    container,
    env_of,
    fleet_workloads,
    literal_env,
    pod_spec,
)


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
        ("Role", f"{PREFIX}-producer-sts"),
        ("RoleBinding", f"{PREFIX}-producer-sts"),
        ("ConfigMap", f"{PREFIX}-config"),
        ("Secret", f"{PREFIX}-flower-auth"),
        ("Secret", f"{PREFIX}-sealing"),
        ("StatefulSet", f"{PREFIX}-producer"),
        ("Service", f"{PREFIX}-producer"),
        ("Deployment", f"{PREFIX}-worker"),
        ("Service", f"{PREFIX}-worker-metrics"),
        ("Deployment", f"{PREFIX}-beat"),
        ("Deployment", f"{PREFIX}-flower"),
        ("Service", f"{PREFIX}-flower"),
        ("Deployment", f"{PREFIX}-redis"),
        ("Service", f"{PREFIX}-redis"),
        # Secure defaults: the fleet CA, the producer's client certificate, the Redis password, policies.
        ("Secret", f"{PREFIX}-fleet-ca"),
        ("Secret", f"{PREFIX}-producer-tls"),
        ("Secret", f"{PREFIX}-redis-auth"),
        ("NetworkPolicy", f"{PREFIX}-producer"),
        ("NetworkPolicy", f"{PREFIX}-worker"),
        ("NetworkPolicy", f"{PREFIX}-redis"),
        # Disruption budgets of every component (tests/deploy/test_helm_operations.py).
        *(
            ("PodDisruptionBudget", f"{PREFIX}-{c}")
            for c in ("producer", "worker", "beat", "flower", "redis")
        ),
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
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # A scale-down drain (--drain-timeout, its default) fits in the grace period.
    drain_timeout = producer_parser().parse_args(c["args"]).drain_timeout
    assert drain_timeout < pod_spec(sts)["terminationGracePeriodSeconds"] == 600
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
    assert "bundled Redis" in notes and "controlPlaneCIDRs is empty" in notes and "PLAINTEXT" not in notes
    assert "aws_certificate_pem is empty" in notes  # every agent bootstrap would be refused
    quiet = h.notes(PROD_VALUES)
    assert "bundled Redis" not in quiet and "PLAINTEXT" not in quiet and "aws.roleArn is empty" not in quiet
    assert "aws_certificate_pem is empty" not in quiet
    assert "PLAINTEXT" in h.notes(None, "agentTls.insecurePlaintext=true")


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
