"""Where ``vkec2 bench`` makes its pods and how it sees them: a standalone manifest directory, or the API.

:class:`ManifestTarget` writes one manifest per pod (``<namespace>_<name>.yaml``, written to a dot
file first and renamed, so the producer never reads half a file) into the directory a standalone
producer watches (``vkec2 producer --manifests DIR``, the ``pods`` directory of ``vkec2 up``), and
removes the files whose pods carry the run's label. Standalone mode has no pod objects: a pod's
status lives in its Redis record, keyed by the UID the producer derives from the file's name and
content (:func:`producer.standalone.parse_manifest`, used here too so both agree), and read through
:class:`~vkec2.store.redis_store.Store`; a record that is gone or Terminated is a pod gone.
:class:`ApiTarget` creates and deletes pods through the official ``kubernetes`` client
(:class:`producer.kube.Kube`) and follows them with one watch on the run's label selector, relisting
after a 410. Both report what they see to a :class:`~vkec2.cli.benchload.Tally`: a pod reaching its
goal (Running — or Succeeded, it did run — for a launch; gone for a delete), a pod failing (its
reason), and the state of those still on their way.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from producer.kube import Kube, KubeError
from producer.standalone import SUFFIXES, ManifestError, parse_manifest
from vkec2.cli.benchload import RUN_LABEL, Obj, Tally, TemplateError
from vkec2.domain.models import Phase
from vkec2.store.redis_store import Store

RUNNING = "Running"
GONE = "gone"
#: Pod phases that mean the workload ran: a launch's goal.
RAN = ("Running", "Succeeded")


@dataclass(frozen=True)
class Made:
    """One pod a target made or will remove: ``key`` is ``namespace/name``; ``ref`` what the target needs."""

    key: str
    ref: str  # the manifest's file name, or the pod's UID
    body: Obj | None = None


def key_of(pod: Obj) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name', '')}"


def selector(run_id: str | None) -> str:
    """The label selector of one run's pods, or of every bench pod (``run_id`` None)."""
    return f"{RUN_LABEL}={run_id}" if run_id else RUN_LABEL


class ManifestTarget:
    """Pods as manifest files in a standalone producer's directory; status from the fleet's Redis."""

    def __init__(self, directory: Path, store: Store | None) -> None:
        self.directory = directory
        self.store = store
        self.uids: dict[str, str] = {}  # key -> the UID the producer gives the pod
        self.texts: dict[str, str] = {}  # file name -> manifest text
        self.state: dict[str, str] = {}  # key -> what its record says, for pods on their way

    # -- launch ------------------------------------------------------------------------------------

    def prepare(self, pods: list[Obj], run_id: str) -> list[Made]:
        """The manifests of ``pods``, checked as the producer will read them; nothing written yet."""
        made: list[Made] = []
        for pod in pods:
            meta = pod["metadata"]
            filename = f"{meta['namespace']}_{meta['name']}.yaml"
            text = (
                f"# made by vkec2 bench launch, run {run_id}; "
                f"vkec2 bench delete --run-id {run_id} --manifests DIR removes it\n"
                + yaml.safe_dump(pod, sort_keys=False)
            )
            try:
                (parsed,) = parse_manifest(filename, text, meta.get("spec", {}).get("nodeName", ""))
            except (ManifestError, ValueError) as exc:
                raise TemplateError(f"pod {key_of(pod)}: standalone mode refuses it: {exc}") from None
            self.texts[filename] = text
            self.uids[key_of(pod)] = parsed["metadata"]["uid"]
            made.append(Made(key_of(pod), filename))
        return made

    def create(self, item: Made) -> None:
        path = self.directory / item.ref
        if path.exists():
            raise FileExistsError(f"{path} exists already (run ID used before?)")
        scratch = self.directory / f".{item.ref}.tmp"
        scratch.write_text(self.texts[item.ref])
        os.replace(scratch, path)

    # -- delete ------------------------------------------------------------------------------------

    def find(self, run_id: str | None) -> list[Made]:
        """The files whose every pod carries the bench label (of ``run_id``, or any run)."""
        found: list[Made] = []
        for path in sorted(self.directory.iterdir()):
            if not path.is_file() or path.suffix not in SUFFIXES or path.name.startswith("."):
                continue
            try:
                text = path.read_text()
                pods = parse_manifest(path.name, text, "")
            except (OSError, UnicodeDecodeError, ManifestError):
                continue  # not a bench manifest we could have written
            labels = [(p["metadata"].get("labels") or {}).get(RUN_LABEL) for p in pods]
            if pods and all(v is not None and (run_id is None or v == run_id) for v in labels):
                for pod in pods:
                    self.uids[key_of(pod)] = pod["metadata"]["uid"]
                    found.append(Made(key_of(pod), path.name))
        return found

    def remove(self, item: Made) -> None:
        (self.directory / item.ref).unlink(missing_ok=True)  # a file of several pods: its first pod

    # -- status ------------------------------------------------------------------------------------

    def poll(self, tally: Tally, clock: Callable[[], float] = time.monotonic) -> None:
        """Read the records of the pods started so far and report what they show."""
        if self.store is None:
            return
        records = {r.uid: r for r in self.store.records()}
        now = clock()
        for key in list(tally.started):
            record = records.get(self.uids.get(key, ""))
            if tally.goal == GONE:
                if record is None or record.phase is Phase.TERMINATED:
                    tally.reach(key, now)
                else:
                    self.state[key] = record.phase.value
            elif record is None:
                self.state[key] = "not picked up by the producer"
            elif record.phase.value in RAN:
                tally.reach(key, now)
            elif record.phase is Phase.FAILED:
                tally.fail(key, record.reason or "Failed")
            else:
                self.state[key] = f"{record.phase.value} {record.reason}".strip()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


class ApiTarget:
    """Pods through the Kubernetes API, followed by one watch on the run's label selector."""

    def __init__(self, kube: Kube, label_selector: str, grace_seconds: int | None = None) -> None:
        self.kube = kube
        self.selector = label_selector
        self.grace = grace_seconds
        self.state: dict[str, str] = {}
        self.watch_error: str = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tally: Tally | None = None

    def list(self, namespace: str | None) -> tuple[list[Made], str]:
        """The run's pods (in ``namespace``, None: every namespace) and the list's resourceVersion."""
        pods, rv = self.kube.list_pods(None, self.selector)
        made = [
            Made(key_of(p), str(p["metadata"]["uid"]), p)
            for p in pods
            if namespace is None or p["metadata"].get("namespace") == namespace
        ]
        return made, rv

    def follow(self, tally: Tally, resource_version: str) -> None:
        """Watch the selector from ``resource_version`` in a thread, reporting to ``tally``."""
        self._tally = tally
        self._thread = threading.Thread(target=self._watch, args=(resource_version,), daemon=True)
        self._thread.start()

    def create(self, item: Made) -> None:
        assert item.body is not None
        self.kube.call(self.kube.core.create_namespaced_pod, item.body["metadata"]["namespace"], item.body)

    def remove(self, item: Made) -> None:
        namespace, _, name = item.key.partition("/")
        self.kube.delete_pod(namespace, name, item.ref, self.grace)

    def poll(self, tally: Tally, clock: Callable[[], float] = time.monotonic) -> None:
        """Nothing to do: the watch reports as events arrive."""

    def _see(self, kind: str, obj: Obj) -> None:
        tally = self._tally
        if tally is None:
            return
        key, now = key_of(obj), time.monotonic()
        status = obj.get("status") or {}
        phase = str(status.get("phase") or "Pending")
        if tally.goal == GONE:
            if kind == "DELETED":
                tally.reach(key, now)
            else:
                terminating = (obj.get("metadata") or {}).get("deletionTimestamp")
                self.state[key] = "Terminating" if terminating else phase
        elif kind != "DELETED":
            if phase in RAN:
                tally.reach(key, now)
            elif phase == "Failed":
                tally.fail(key, str(status.get("reason") or "Failed"))
            else:
                self.state[key] = f"{phase} {_waiting_reason(status)}".strip()

    def _watch(self, resource_version: str) -> None:
        rv = resource_version
        while not self._stop.is_set():
            try:
                for kind, obj in self.kube.watch_pods(None, rv, 60, label_selector=self.selector):
                    rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._see(kind, obj)
            except KubeError as exc:
                if self._stop.is_set():
                    return
                if exc.gone:
                    try:
                        pods, rv = self.kube.list_pods(None, self.selector)
                    except KubeError as again:
                        self.watch_error = str(again)
                        self._stop.wait(1.0)
                        continue
                    for pod in pods:
                        self._see("MODIFIED", pod)
                    continue
                self.watch_error = str(exc)
                self._stop.wait(1.0)

    def close(self) -> None:
        self._stop.set()
        self.kube.abort_watches()
        if self._thread is not None:
            self._thread.join(5)
        self.kube.close()


def _waiting_reason(status: dict[str, Any]) -> str:
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            return str(waiting["reason"])
    return str(status.get("reason") or "")
