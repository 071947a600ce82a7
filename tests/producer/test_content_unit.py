"""producer/content.py and standalone ConfigMaps/Secrets: waiting pods are retried (never dropped),
reported once per reason, running pods' changed volume content is published as an update, and
standalone manifests are their own ConfigMap/Secret store."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from producer.content import PodContent
from producer.refs import resolve
from producer.standalone import ManifestObjects, parse_manifest, parse_objects
from vkec2.contract import RESOLVED_FIELD
from vkec2.domain.models import Phase, PodRecord
from vkec2.domain.sealed import Sealer


class _Link:
    """FleetLink with the content hook: create/update write records here."""

    def __init__(self, content: PodContent) -> None:
        self.content = content
        self.store = self
        self.records: dict[str, PodRecord] = {}
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def get(self, uid: str) -> PodRecord | None:
        return self.records.get(uid)

    def _put(self, task: str, pod: Mapping[str, Any], prepared: bool) -> int | None:
        ready = dict(pod) if prepared else self.content.prepare(pod)
        if ready is None:
            return None
        uid = ready["metadata"]["uid"]
        self.records[uid] = PodRecord(uid=uid, spec=ready, phase=Phase.RUNNING)
        self.sent.append((task, ready))
        return 1

    def create(self, pod: Mapping[str, Any], *, rebuilt: bool = False) -> int | None:
        return self._put("create", pod, False)

    def update(self, pod: Mapping[str, Any], *, prepared: bool = False) -> int | None:
        return self._put("update", pod, prepared)


class _Objects:
    def __init__(self) -> None:
        self.cms: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, Any]] = {}

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cms.get(name)

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get(name)

    def token(self, pod: Mapping[str, Any], audience: str, seconds: int) -> str:
        return "t"


def _pod() -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                }
            ],
            "volumes": [{"name": "v", "configMap": {"name": "cm"}}],
        },
    }


def test_a_waiting_pod_is_reported_once_retried_and_its_changes_are_published() -> None:
    objs, reports = _Objects(), []
    sealer = Sealer([Sealer.generate_key()])
    content = PodContent(objs, sealer, lambda pod, reason, message: reports.append((reason, message)))
    link = _Link(content)
    assert link.create(_pod()) is None and link.create(_pod()) is None
    assert reports == [("CreateContainerConfigError", 'secret "s" not found')]  # once per message
    assert content.waiting() == {"u1"}

    objs.secrets["s"] = {"data": {"k": base64.b64encode(b"hunter2").decode()}}
    content.sweep(link, refresh=False)
    assert reports[-1] == ("CreateContainerConfigError", 'configmap "cm" not found')
    objs.cms["cm"] = {"data": {"f": "one"}}
    content.sweep(link, refresh=False)
    assert [task for task, _ in link.sent] == ["create"] and content.waiting() == set()
    stored = link.sent[0][1][RESOLVED_FIELD]
    assert "hunter2" not in str(link.sent[0][1])
    assert sealer.open(stored)["containers"]["c"]["env"] == {"S": "hunter2"}

    content.sweep(link, refresh=True)  # nothing changed: nothing published
    assert len(link.sent) == 1
    objs.secrets["s"] = {"data": {"k": base64.b64encode(b"other").decode()}}
    content.sweep(link, refresh=True)  # env only: a running container keeps its environment
    assert len(link.sent) == 1
    objs.cms["cm"] = {"data": {"f": "two"}}
    content.sweep(link, refresh=True)
    assert [task for task, _ in link.sent] == ["create", "update"]
    del objs.cms["cm"]
    content.sweep(link, refresh=True)  # a reference failing later keeps the pod's files
    assert len(link.sent) == 2 and reports[-1][1] == 'configmap "cm" not found' and len(reports) == 2

    content.forget("u1")
    assert link.create({**_pod(), "metadata": {**_pod()["metadata"], "uid": "u2"}}) is None
    content.forget("u2")
    content.sweep(link, refresh=True)
    assert content.waiting() == set() and len(link.sent) == 2


def test_no_key_makes_the_pod_wait_with_a_reason() -> None:
    reports: list[tuple[str, str]] = []
    content = PodContent(_Objects(), None, lambda pod, reason, message: reports.append((reason, message)))
    assert content.prepare(_pod()) is None
    assert reports[0][0] == "SealingKeyError" and "secrets.keys" in reports[0][1]
    plain = {"metadata": {"name": "q", "uid": "u3"}, "spec": {"containers": [{"name": "c"}]}}
    assert content.prepare(plain) == plain  # a pod that references nothing needs no key


def test_standalone_manifests_hold_configmaps_and_secrets_next_to_pods() -> None:
    text = """
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
data: {f: one}
---
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: team}
stringData: {k: v}
---
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers: [{name: c, command: [sleep, "1"]}]
"""
    pods = parse_manifest("all.yaml", text, "vk-0")
    assert [p["metadata"]["name"] for p in pods] == ["p"]
    objects = ManifestObjects()
    objects.by_file["all.yaml"] = parse_objects(text)
    assert objects.configmap("default", "cm") == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm"},
        "data": {"f": "one"},
    }
    assert objects.secret("default", "s") is None and objects.secret("team", "s") is not None


def test_the_report_example_resolves_against_the_example_configmap_and_secret() -> None:
    root = Path(__file__).resolve().parents[2] / "vkec2" / "examples"
    objects = ManifestObjects()
    for name in ("report-settings.yaml", "report-credentials.yaml"):
        objects.by_file[name] = parse_objects((root / "pods" / name).read_text())
    example = root / "pods" / "report-with-config.yaml"
    (pod,) = parse_manifest(example.name, example.read_text(), "vkec2-local")
    env = resolve(pod, objects)["containers"]["report"]
    assert env["env"] == {"API_TOKEN": "demo-token-not-a-secret"}
    assert ["REPORT_TITLE", "Nightly fleet report"] in env["envFrom"]


def test_the_kubelet_api_shows_pods_without_their_sealed_content() -> None:
    from producer.kubelet.pods import pod_object

    spec = {**_pod(), RESOLVED_FIELD: {"sealed": "token", "digest": "d"}}
    shown = pod_object(PodRecord(uid="u1", name="p", namespace="default", spec=spec))
    assert RESOLVED_FIELD not in shown and shown["spec"] == _pod()["spec"]
