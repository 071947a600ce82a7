"""Standalone mode: pods from a directory of manifests, like kubelet static pods; no Kubernetes involved.

``vkec2 producer --manifests DIR`` reads every ``*.yaml``/``*.yml``/``*.json`` file in DIR (several
YAML documents per file; ``kind: Pod`` or ``kind: List`` of pods), binds each pod to this node and
gives it a UID derived from the file's path (relative to DIR) and the document's content, so an
unchanged pod keeps its UID across restarts and rescans while an edited one becomes a new pod. The
directory is polled (content hashes, every ``interval`` seconds): a new or changed file creates or
replaces its pods, a removed file deletes them; a file that fails to parse keeps its previous
pods. Like the pod watch, the first scan (and a rescan when Redis lost its data, see
:mod:`producer.epoch`, checked every ``--lease-interval``) reconciles every pod and records the
node's reconcile at the Redis epoch. The same tasks and the same status outbox are used as in
Kubernetes mode; status stays in the Redis records (shown by the CLI), and :class:`StandaloneSink`
forgets a record once its pod was removed from the manifests and the fleet reports it Terminated.
v1 ConfigMaps and Secrets in the same directory are what its pods' references resolve against
(:class:`ManifestObjects`; a service account token cannot be had without Kubernetes), and a
pod whose ``nodeSelector`` the node's labels do not satisfy is logged as a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import uuid
from pathlib import Path
from typing import Any

import yaml

from producer.epoch import EpochWatch
from producer.fleet import FleetLink
from producer.kube import Obj
from vkec2.contract import MANIFEST_ANNOTATION
from vkec2.domain.models import StatusEvent
from vkec2.store.redis_store import Store

log = logging.getLogger(__name__)

UID_NAMESPACE = uuid.UUID("5d0c4f3e-6f0b-4b8e-9a51-7a1f3c2e9b10")
SUFFIXES = (".yaml", ".yml", ".json")
#: Kinds a manifest directory may hold besides pods (their data is for pods, not resolved here).
DATA_KINDS = ("ConfigMap", "Secret")


class ManifestError(ValueError):
    """A manifest file that cannot be turned into pods."""


def pod_uid(relpath: str, doc: Any) -> str:
    """A UID stable for the same file path and document content."""
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return str(uuid.uuid5(UID_NAMESPACE, f"{relpath}\n{canonical}"))


def parse_manifest(relpath: str, text: str, node: str) -> list[Obj]:
    """The pods of one manifest file, bound to ``node``, each with its stable UID."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except (yaml.YAMLError, RecursionError) as exc:
        raise ManifestError(f"{relpath}: not valid YAML: {exc}") from None
    pods: list[Obj] = []
    for index, doc in enumerate(docs):
        items = doc.get("items") if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
        if items is not None and not isinstance(items, list):
            raise ManifestError(f"{relpath} (document {index + 1}): items of a List must be a list")
        for item in items or []:
            if _data_object(item):
                continue  # a ConfigMap or Secret: parse_objects
            pods.append(_pod(relpath, index, item, node))
    seen: set[tuple[str, str]] = set()
    for pod in pods:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        if key in seen:
            raise ManifestError(f"{relpath}: pod {key[0]}/{key[1]} is defined twice")
        seen.add(key)
    return pods


def _data_object(doc: Any) -> bool:
    """A v1 ConfigMap or Secret: data for pods, not a pod (see :class:`ManifestObjects`)."""
    return isinstance(doc, dict) and doc.get("apiVersion", "v1") == "v1" and doc.get("kind") in DATA_KINDS


def selector_mismatch(pod: Obj, labels: dict[str, str]) -> dict[str, str]:
    """The entries of the pod's ``nodeSelector`` the node's ``labels`` do not satisfy ({} when all do)."""
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    if not isinstance(selector, dict):
        return {}
    return {str(k): str(v) for k, v in selector.items() if labels.get(str(k)) != str(v)}


def parse_objects(text: str) -> list[Obj]:
    """The v1 ConfigMaps and Secrets of one manifest file (what its pods may reference)."""
    found: list[Obj] = []
    for doc in yaml.safe_load_all(text):
        items = doc.get("items") if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
        for item in items if isinstance(items, list) else []:
            if _data_object(item) and isinstance(item.get("metadata"), dict):
                found.append(item)
    return found


class ManifestObjects:
    """ConfigMaps and Secrets from the manifest directory, as :class:`producer.refs.Lookup`."""

    def __init__(self) -> None:
        self.by_file: dict[str, list[Obj]] = {}

    def _find(self, kind: str, namespace: str, name: str) -> Obj | None:
        for objs in self.by_file.values():
            for obj in objs:
                meta = obj["metadata"]
                same = obj["kind"] == kind and meta.get("name") == name
                if same and (meta.get("namespace") or "default") == namespace:
                    return obj
        return None

    def configmap(self, namespace: str, name: str) -> Obj | None:
        return self._find("ConfigMap", namespace, name)

    def secret(self, namespace: str, name: str) -> Obj | None:
        return self._find("Secret", namespace, name)

    def token(self, pod: Any, audience: str, seconds: int) -> str:
        from producer.refs import RefError

        raise RefError("a serviceAccountToken projection needs the Kubernetes API (not in standalone mode)")


def _pod(relpath: str, index: int, doc: Any, node: str) -> Obj:
    where = f"{relpath} (document {index + 1})"
    if not isinstance(doc, dict):
        raise ManifestError(f"{where}: expected a mapping, got {type(doc).__name__}")
    if doc.get("kind", "Pod") != "Pod" or doc.get("apiVersion", "v1") != "v1":
        raise ManifestError(
            f"{where}: only v1 Pods are supported, not {doc.get('apiVersion')}/{doc.get('kind')}"
        )
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise ManifestError(f"{where}: metadata.name is required")
    spec = doc.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list) or not spec["containers"]:
        raise ManifestError(f"{where}: spec.containers must list at least one container")
    namespace = meta.get("namespace") or "default"
    if not isinstance(namespace, str):
        raise ManifestError(f"{where}: metadata.namespace must be a string")
    if not isinstance(meta.get("annotations") or {}, dict):
        raise ManifestError(f"{where}: metadata.annotations must be a mapping")
    try:
        uid = pod_uid(relpath, doc)
    except (ValueError, RecursionError):  # a YAML alias that contains itself
        raise ManifestError(f"{where}: the document refers to itself (a recursive YAML alias)") from None
    metadata = {k: v for k, v in meta.items() if k not in ("uid", "resourceVersion", "creationTimestamp")}
    metadata["namespace"] = namespace
    metadata["uid"] = uid
    annotations = dict(metadata.get("annotations") or {})
    annotations[MANIFEST_ANNOTATION] = relpath
    metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {**spec, "nodeName": node}}


class ManifestSource:
    """Polls a directory and keeps the node's pods equal to what its manifests say."""

    def __init__(
        self,
        directory: Path,
        link: FleetLink,
        interval: float = 1.0,
        epoch: EpochWatch | None = None,
        node_labels: dict[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.node_labels = node_labels  # the labels the node would carry (producer.node.labels)
        self.link = link
        self.epoch = epoch
        self.interval = interval
        self._files: dict[str, tuple[str, list[Obj]]] = {}  # relpath -> (digest, pods)
        self.objects = ManifestObjects()
        self.synced = threading.Event()
        self.scans = 0

    def _read(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for path in sorted(self.directory.iterdir()):
            if path.is_file() and path.suffix in SUFFIXES and not path.name.startswith("."):
                try:
                    out[path.name] = path.read_bytes()
                except OSError as exc:
                    log.warning("cannot read %s: %s", path, exc)
        return out

    def desired(self) -> dict[str, Obj]:
        return {p["metadata"]["uid"]: p for _, pods in self._files.values() for p in pods}

    def scan(self) -> bool:
        """Read the directory once; apply what changed. True if anything changed."""
        blobs = self._read()
        before = self.desired()
        changed = False
        for name in list(self._files):
            if name not in blobs:
                log.info("manifest %s removed", name)
                del self._files[name]
                self.objects.by_file.pop(name, None)
                changed = True
        for name, blob in blobs.items():
            digest = hashlib.sha256(blob).hexdigest()
            known = self._files.get(name)
            if known is not None and known[0] == digest:
                continue
            try:
                pods = parse_manifest(name, blob.decode("utf-8", errors="replace"), self.link.node)
            except ManifestError as exc:
                log.error("%s; keeping its previous pods", exc)
                self._files[name] = (digest, known[1] if known else [])
                continue
            self.objects.by_file[name] = parse_objects(blob.decode("utf-8", errors="replace"))
            log.info("manifest %s: %d pod(s)", name, len(pods))
            for pod in pods:
                mismatch = selector_mismatch(pod, self.node_labels) if self.node_labels is not None else {}
                if mismatch:
                    log.warning(
                        "pod %s in %s: nodeSelector %s does not match this node's labels (a kubelet "
                        "would refuse it); running it anyway",
                        pod["metadata"]["name"],
                        name,
                        mismatch,
                    )
            self._files[name] = (digest, pods)
            changed = True
        after = self.desired()
        if not self.synced.is_set() or (self.epoch is not None and self.epoch.relist.is_set()):
            epoch = self.epoch.before_list() if self.epoch is not None else ""
            self.reconcile(after)
            if self.epoch is not None:
                self.epoch.listed(epoch)
            self.synced.set()
        elif changed:
            self._apply(before, after)
        self.scans += 1
        return changed

    def reconcile(self, desired: dict[str, Obj]) -> None:
        """At start, and after Redis lost its data: submit every desired pod (no-op when running;
        a record created again is flagged ``rebuilt``, row C27), delete records no manifest names."""
        for pod in desired.values():
            record = self.link.store.get(pod["metadata"]["uid"])
            if record is None or not (record.deleted or record.phase.final):
                self.link.create(pod, rebuilt=True)
        for record in self.link.store.records(self.link.node):
            if record.uid not in desired:
                if record.done:
                    self.link.store.forget(record.uid)
                else:  # (again, if it was deleted already: a delete is idempotent)
                    self.link.delete(record.uid)

    def _apply(self, before: dict[str, Obj], after: dict[str, Obj]) -> None:
        for uid in sorted(set(before) - set(after)):
            meta = before[uid]["metadata"]
            log.info("pod %s/%s (%s) left the manifests: deleting", meta["namespace"], meta["name"], uid)
            self.link.delete(uid)
        for uid in sorted(set(after) - set(before)):
            meta = after[uid]["metadata"]
            log.info(
                "pod %s/%s (%s) from %s: creating",
                meta["namespace"],
                meta["name"],
                uid,
                meta["annotations"][MANIFEST_ANNOTATION],
            )
            self.link.create(after[uid])

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.scan()
            except Exception:
                log.exception("scanning %s failed", self.directory)
            stop.wait(self.interval)


class StandaloneSink:
    """The outbox handler of standalone mode: log each event; forget removed pods' records once Terminated."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __call__(self, entry_id: str, event: StatusEvent) -> None:
        level = logging.WARNING if event.event_type == "Warning" else logging.INFO
        log.log(
            level,
            "pod %s/%s %s: %s %s",
            event.namespace,
            event.name,
            event.phase.value,
            event.reason,
            event.message,
        )
        record = self.store.get(event.uid)
        if record is not None and record.done:
            self.store.forget(event.uid)

    def transient(self, exc: Exception) -> bool:
        """Every failure counts: only Redis is involved, and its errors are retried by the consumer."""
        return False

    def dead_lettered(self, entry_id: str, event: StatusEvent, reason: str) -> None:
        """Nothing to tell beyond the consumer's log line: standalone status lives in the records."""
