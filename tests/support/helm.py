"""The Helm chart under test: the real `helm` binary run with private directories, and what it renders.

:class:`Helm` renders, lints and dry-runs ``helm/vkec2`` with values given as a dict or ``--set`` items;
:class:`Objects` looks the rendered objects up by kind and name; the small functions read pod specs,
containers and their environment. Shared by the chart tests in ``tests/deploy/``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]


ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "vkec2"
RELEASE = "fleet"
NAMESPACE = "vkec2-system"
PREFIX = "fleet-vkec2"

#: What the producer may do with the API (docs/producer.md "RBAC", the deployment brief): exactly this.
PRODUCER_CLUSTER_RULES = {
    *(("", "nodes", verb) for verb in ("create", "get", "update")),
    ("", "nodes/status", "patch"),
    *(("", "pods", verb) for verb in ("get", "list", "watch", "delete", "patch")),
    ("", "nodes", "delete"),  # removing its own node (producer/drain.py)
    ("", "pods/status", "update"),
    ("", "events", "create"),
    # The kubelet API's webhook authentication and authorization (producer/kubelet/reviews.py).
    ("authentication.k8s.io", "tokenreviews", "create"),
    ("authorization.k8s.io", "subjectaccessreviews", "create"),
    # What its pods reference (producer/content.py): GET by name only, and pod-bound tokens.
    ("", "configmaps", "get"),
    ("", "secrets", "get"),
    ("", "serviceaccounts/token", "create"),
}
PRODUCER_LEASE_RULES = {("coordination.k8s.io", "leases", verb) for verb in ("create", "get", "update")}
#: In the release namespace, on its own StatefulSet only: the scale-down check (producer/scaledown.py).
PRODUCER_SCALEDOWN_RULES = {("apps", "statefulsets", "get")}

PROD_VALUES: Obj = {
    "image": {"repository": "registry.example/vkec2", "tag": "1.2.3"},
    "config": {
        "cluster_name": "prod-macs",
        "region": "eu-west-1",
        "ec2": {"image_id": "ami-0abc", "instance_type": "mac2.metal", "subnets": ["subnet-0a", "subnet-0b"]},
        "warm_pools": [{"name": "mac", "instance_type": "mac2.metal", "desired_count": 2}],
        "health": {"interval_seconds": 20},
        # Rendering only: the model checks the PEM marker; bootstraps would read the certificate.
        "agent": {
            "identity": {
                "aws_certificate_pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
            }
        },
    },
    "nodeOS": "darwin",
    "redis": {"bundled": {"enabled": False}, "url": "rediss://:s3cret@redis.example:6380/2"},
    "agentTls": {"secretName": "vkec2-fleet-ca", "producerSecretName": "vkec2-producer-agent-client"},
    "aws": {"roleArn": "arn:aws:iam::123456789012:role/vkec2-workers"},
    "networkPolicy": {"controlPlaneCIDRs": ["10.0.0.0/24", "10.0.1.0/24"]},
    "metrics": {"port": 9300, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "producer": {"replicas": 3},
    "worker": {"replicas": 4, "concurrency": 16},
    "flower": {"basicAuth": {"secretName": "flower-users", "secretKey": "users"}},
}


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


def role_rules(role: Obj) -> set[tuple[str, str, str]]:
    """A Role's or ClusterRole's grants, one (apiGroup, resource, verb) per combination."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


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
