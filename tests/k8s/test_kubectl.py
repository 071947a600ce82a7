"""The real ``kubectl`` binary (tests.support.kubetools) against the API double: get, apply and delete pods.

This keeps the double honest about discovery, Table output, client-side apply (GET, POST, then a strategic
merge PATCH) and deletion with kubectl's own wait. ``apply`` runs with ``--validate=false`` because the
double serves no OpenAPI document.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.apiserver import FakeKubeApiServer
from tests.support.kubetools import kubectl_path

Obj = dict[str, Any]

POD_YAML = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {{app: web{extra}}}
spec:
  containers:
  - name: main
    image: nginx:1.27
"""


@pytest.fixture(scope="module")
def kubectl_bin() -> Path:
    return kubectl_path()


@pytest.fixture
def server() -> Iterator[FakeKubeApiServer]:
    with FakeKubeApiServer() as srv:
        yield srv


class Kubectl:
    """Runs kubectl with a private kubeconfig, HOME and cache dir pointing at the double."""

    def __init__(self, binary: Path, server: FakeKubeApiServer, home: Path) -> None:
        self.binary = binary
        self.home = home
        self.kubeconfig = home / "kubeconfig"
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "double",
                    "clusters": [{"name": "double", "cluster": {"server": server.url}}],
                    "users": [{"name": "nobody", "user": {}}],
                    "contexts": [
                        {
                            "name": "double",
                            "context": {"cluster": "double", "user": "nobody", "namespace": "default"},
                        }
                    ],
                }
            )
        )

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run(
            [
                str(self.binary),
                "--kubeconfig",
                str(self.kubeconfig),
                "--cache-dir",
                str(self.home / "cache"),
                "--request-timeout=20s",
                *args,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env={"HOME": str(self.home), "PATH": "/usr/bin:/bin"},
        )
        assert proc.returncode == 0, f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}"
        return proc.stdout


@pytest.fixture
def kubectl(kubectl_bin: Path, server: FakeKubeApiServer, tmp_path: Path) -> Kubectl:
    return Kubectl(kubectl_bin, server, tmp_path)


def add_node(server: FakeKubeApiServer, name: str, ready: str = "True") -> None:
    server.create(
        "nodes",
        {
            "metadata": {"name": name, "labels": {"type": "virtual-kubelet", "kubernetes.io/role": "agent"}},
            "status": {
                "conditions": [{"type": "Ready", "status": ready}],
                "nodeInfo": {"kubeletVersion": "v1.33.0-vkec2"},
            },
        },
    )


def add_pod(server: FakeKubeApiServer, name: str, node: str | None, namespace: str = "default") -> Obj:
    return server.create(
        "pods",
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox:1.36"}]},
        },
    )


def test_get_pods_and_nodes(kubectl: Kubectl, server: FakeKubeApiServer) -> None:
    assert kubectl("get", "pods") == ""
    add_node(server, "vk-0")
    add_pod(server, "one", "vk-0")
    add_pod(server, "two", None, namespace="kube-system")

    table = kubectl("get", "pods").splitlines()
    assert table[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert table[1].split()[:4] == ["one", "0/1", "Pending", "0"] and len(table) == 2
    everywhere = kubectl("get", "pods", "-A", "-o", "wide")
    assert "kube-system" in everywhere and "two" in everywhere and "vk-0" in everywhere

    listed = json.loads(kubectl("get", "pods", "-o", "json"))
    assert [(p["kind"], p["metadata"]["name"]) for p in listed["items"]] == [("Pod", "one")]
    assert listed["items"][0]["metadata"]["uid"] == server.get("pods", "one", "default")["metadata"]["uid"]  # type: ignore[index]
    one = json.loads(kubectl("get", "pod", "one", "-o", "json"))
    assert one["spec"]["nodeName"] == "vk-0"

    nodes = kubectl("get", "nodes").splitlines()
    assert nodes[1].split()[:3] == ["vk-0", "Ready", "agent"] and nodes[1].split()[-1] == "v1.33.0-vkec2"
    by_field = kubectl("get", "pods", "-A", "--field-selector", "spec.nodeName=vk-0", "-o", "name")
    assert by_field.split() == ["pod/one"]
    assert server.request_count("list", "pods") >= 5


def test_apply_creates_then_updates_a_pod(kubectl: Kubectl, server: FakeKubeApiServer) -> None:
    out = kubectl("apply", "--validate=false", "-f", "-", stdin=POD_YAML.format(extra=""))
    assert out.strip() == "pod/web created"
    created = server.get("pods", "web", "default")
    assert created is not None and created["metadata"]["labels"] == {"app": "web"}
    assert "kubectl.kubernetes.io/last-applied-configuration" in created["metadata"]["annotations"]

    out = kubectl("apply", "--validate=false", "-f", "-", stdin=POD_YAML.format(extra=", tier: front"))
    assert out.strip() == "pod/web configured"
    updated = server.get("pods", "web", "default")
    assert updated is not None and updated["metadata"]["labels"] == {"app": "web", "tier": "front"}
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert server.request_count("patch", "pods") == 1

    out = kubectl("apply", "--validate=false", "-f", "-", stdin=POD_YAML.format(extra=", tier: front"))
    assert out.strip() == "pod/web unchanged"
    unchanged = server.get("pods", "web", "default")
    assert unchanged is not None
    assert unchanged["metadata"]["resourceVersion"] == updated["metadata"]["resourceVersion"]


def test_delete_pods(kubectl: Kubectl, server: FakeKubeApiServer) -> None:
    add_pod(server, "unbound", None)
    bound = add_pod(server, "bound", "vk-0")

    # Unbound: deleted at once; kubectl's own wait for the deletion returns.
    assert kubectl("delete", "pod", "unbound").strip() == 'pod "unbound" deleted'
    assert server.get("pods", "unbound", "default") is None

    # Bound: graceful, the object stays with a deletionTimestamp until a zero-grace delete.
    kubectl("delete", "pod", "bound", "--wait=false")
    terminating = server.get("pods", "bound", "default")
    assert terminating is not None and terminating["metadata"]["deletionGracePeriodSeconds"] == 30
    assert "Terminating" in kubectl("get", "pods")
    kubectl("delete", "pod", "bound", "--grace-period=0", "--force")
    assert server.get("pods", "bound", "default") is None
    kinds = [(e.type, e.obj["metadata"]["name"]) for e in server.history() if e.resource == "pods"]
    assert kinds[-3:] == [("DELETED", "unbound"), ("MODIFIED", "bound"), ("DELETED", "bound")]
    assert bound["metadata"]["uid"] == terminating["metadata"]["uid"]
