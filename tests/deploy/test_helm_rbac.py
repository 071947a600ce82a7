"""What the chart grants: RBAC exactly as the producer uses the API, nothing for workers, IRSA, and the
documented AWS policy covering every call the fleet makes.
"""

from __future__ import annotations

import json
import re

from tests.support.helm import (
    NAMESPACE,
    PREFIX,
    PROD_VALUES,
    PRODUCER_CLUSTER_RULES,
    PRODUCER_LEASE_RULES,
    PRODUCER_SCALEDOWN_RULES,
    ROOT,
    Helm,
    pod_spec,
    role_rules,
)


def _code_api_calls() -> set[tuple[str, str]]:
    """(resource, verb) of every Kubernetes client call in producer/ (read_node -> nodes get, ...),
    called (``.read_node(``) or handed to ``Kube._call`` (``self.core.read_node,``)."""
    verbs = {
        "read": "get",
        "create": "create",
        "replace": "update",
        "patch": "patch",
        "delete": "delete",
        "list": "list",
    }
    pattern = re.compile(
        r"\.(read|create|replace|patch|delete|list)_(?:namespaced_)?"
        r"(node|pod|event|lease|stateful_set|token_review|subject_access_review|config_map|secret"
        r"|service_account_token)(_status)?"
        r"(?:_for_all_namespaces)?[(,]"
    )
    calls: set[tuple[str, str]] = set()
    for path in (ROOT / "producer").rglob("*.py"):
        for verb, resource, status in pattern.findall(path.read_text()):
            plural = (
                "serviceaccounts/token"
                if resource == "service_account_token"
                else resource.replace("_", "") + "s"
            )
            calls.add((plural + ("/status" if status else ""), verbs[verb]))
    return calls


def test_rbac_grants_exactly_what_the_producer_needs(h: Helm) -> None:
    objs = h.template()
    cluster_role = objs.get("ClusterRole", f"{PREFIX}-producer")
    lease_role = objs.get("Role", f"{PREFIX}-producer-lease")
    assert role_rules(cluster_role) == PRODUCER_CLUSTER_RULES
    assert lease_role["metadata"]["namespace"] == "kube-node-lease"
    assert role_rules(lease_role) == PRODUCER_LEASE_RULES
    assert not any(rule.get("resourceNames") == [] for rule in cluster_role["rules"])
    scaledown_role = objs.get("Role", f"{PREFIX}-producer-sts")
    assert scaledown_role["metadata"]["namespace"] == NAMESPACE
    assert role_rules(scaledown_role) == PRODUCER_SCALEDOWN_RULES
    # Only the producers' own StatefulSet, not every one of the namespace.
    assert [r["resourceNames"] for r in scaledown_role["rules"]] == [[f"{PREFIX}-producer"]]
    assert objs.get("StatefulSet", f"{PREFIX}-producer")["metadata"]["namespace"] == NAMESPACE

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
    rb = objs.get("RoleBinding", f"{PREFIX}-producer-sts")
    assert rb["metadata"]["namespace"] == NAMESPACE
    assert rb["roleRef"]["kind"] == "Role" and rb["roleRef"]["name"] == f"{PREFIX}-producer-sts"
    assert rb["subjects"] == producer_subject

    # Every call the producer's code makes is granted (a new call without its rule fails here).
    calls = _code_api_calls()
    assert ("nodes", "create") in calls and ("leases", "update") in calls, calls  # the scan finds calls
    assert ("statefulsets", "get") in calls
    # What pods reference: one GET per name, never list or watch (like the node authorizer).
    assert {("secrets", "get"), ("configmaps", "get"), ("serviceaccounts/token", "create")} <= calls
    assert ("subjectaccessreviews", "create") in calls and ("tokenreviews", "create") in calls
    rules = PRODUCER_CLUSTER_RULES | PRODUCER_LEASE_RULES | PRODUCER_SCALEDOWN_RULES
    granted = {(res, verb) for _, res, verb in rules}
    assert calls <= granted, sorted(calls - granted)
    assert ("pods", "watch") in granted
    # ... and nothing is granted that no call uses, but for these, each with its reason.
    not_called_by_name = {("pods", "watch")}  # list_pod_for_all_namespaces(watch=True), producer/kube.py
    assert granted - calls <= not_called_by_name, sorted(granted - calls - not_called_by_name)
    assert not {("nodes", "list"), ("nodes", "watch")} & granted  # its own Node only, by name
    assert not {("secrets", "list"), ("secrets", "watch"), ("configmaps", "list")} & granted

    plain = h.template(None, "rbac.create=false")
    assert not plain.of_kind("ClusterRole") and not plain.of_kind("Role")


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
