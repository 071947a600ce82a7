"""End to end in standalone mode: a directory of manifests run by the real producer and worker fleet.

No Kubernetes is involved: ``vkec2 producer --manifests DIR`` turns the files into pods with
stable UIDs, the workers run them on moto's EC2 with the agent simulator, and status is read from
the Redis records, as the CLI shows it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from producer.standalone import parse_manifest
from tests.producer.conftest import StartProducer
from tests.support.fleet import FleetHarness
from tests.support.services import wait_until
from vkec2.domain.models import Phase

Make = Callable[..., FleetHarness]
NODE = "vk-local-0"

WEB = """\
apiVersion: v1
kind: Pod
metadata: {name: web-1}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: sim, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: team}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: sim, command: [sleep, "3600"]}]
"""
DB = """\
apiVersion: v1
kind: Pod
metadata: {name: db}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: sim, command: [sleep, "3600"]}]
"""


def _uids(directory: Path, name: str) -> set[str]:
    text = (directory / name).read_text()
    return {p["metadata"]["uid"] for p in parse_manifest(name, text, NODE)}


def test_a_manifest_directory_runs_to_running_and_back_to_nothing(
    make_fleet: Make, start_producer: StartProducer, tmp_path: Path
) -> None:
    fleet = make_fleet()
    fleet.start_worker(concurrency=4)
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "web.yaml").write_text(WEB)
    (manifests / "db.yaml").write_text(DB)
    web, db = _uids(manifests, "web.yaml"), _uids(manifests, "db.yaml")
    producer = start_producer(fleet, NODE, manifests=manifests)

    fleet.wait_phase(web | db, {Phase.RUNNING}, timeout=90)
    assert fleet.store.uids(NODE) == web | db
    assert sorted(fleet.instances_by_uid()) == sorted(web | db)
    assert {(r.namespace, r.name) for r in fleet.store.records(NODE)} == {
        ("default", "web-1"),
        ("team", "web-2"),
        ("default", "db"),
    }

    # A restarted producer finds the same UIDs: nothing is re-created.
    producer.stop()
    producer = start_producer(fleet, NODE, manifests=manifests)
    wait_until(lambda: "manifest web.yaml: 2 pod(s)" in producer.output(), 30, "the restart's scan")
    fleet.wait_phase(web | db, {Phase.RUNNING}, timeout=30)
    every_state = ("pending", "running", "shutting-down", "terminated")
    assert all(len(ids) == 1 for ids in fleet.instances_by_uid(every_state).values())

    # Changing one document replaces that pod only; the unchanged one keeps its UID.
    (manifests / "web.yaml").write_text(WEB.replace("name: web-2", "name: web-3"))
    new_web = _uids(manifests, "web.yaml")
    assert len(new_web & web) == 1
    wait_until(lambda: fleet.store.uids(NODE) == new_web | db, 60, "the replaced pod")
    fleet.wait_phase(new_web, {Phase.RUNNING}, timeout=60)

    # Removing the files deletes their pods, terminates their instances and forgets the records.
    (manifests / "web.yaml").unlink()
    (manifests / "db.yaml").unlink()
    wait_until(lambda: not fleet.store.uids(NODE), 60, "every record to be forgotten")
    wait_until(lambda: fleet.instances_by_uid() == {}, 30, "every instance to be terminated")


def test_a_bad_manifest_keeps_the_previous_pods_and_a_malformed_pod_fails(
    make_fleet: Make, start_producer: StartProducer, tmp_path: Path
) -> None:
    fleet = make_fleet()
    fleet.start_worker(concurrency=2)
    manifests = tmp_path / "m"
    manifests.mkdir()
    (manifests / "db.yaml").write_text(DB)
    bad = DB.replace("name: db}", "name: tagged, annotations: {compute.amazonaws.com/tags: not-json}}")
    (manifests / "bad.yaml").write_text(bad)
    db, tagged = _uids(manifests, "db.yaml"), _uids(manifests, "bad.yaml")
    producer = start_producer(fleet, NODE, manifests=manifests)
    fleet.wait_phase(db, {Phase.RUNNING}, timeout=60)
    fleet.wait_phase(tagged, {Phase.FAILED}, timeout=60)
    record = fleet.record(next(iter(tagged)))
    assert record.reason == "InvalidAnnotation" and "tags" in record.message

    (manifests / "db.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: [broken\n")
    wait_until(lambda: "not valid YAML" in producer.output(), 10, "the parse error to be reported")
    fleet.wait_phase(db, {Phase.RUNNING}, timeout=5)
    assert db <= fleet.store.uids(NODE)
