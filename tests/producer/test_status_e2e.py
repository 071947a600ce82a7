"""End to end: the status path never stalls the node, and a lost status heals by resync.

A real producer (subprocess) against the Kubernetes API double, with real workers, moto and the
agent simulator. The double refuses every ``pods/status`` write of one pod, as an admission webhook
would: the node must stay Ready (lease renewed, no OutboxStalled even with a short stall limit),
the other pods' statuses flow, and the refused pod's entries end in the dead-letter stream, shown
by ``vkec2 status``. Then: status entries deleted from the stream before the producer read them
(the producer frozen with SIGSTOP meanwhile) are healed by the periodic resync.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from tests.k8s.apiserver import FakeKubeApiServer
from tests.producer.conftest import StartProducer, pod_manifest
from tests.support.fleet import FleetHarness
from tests.support.services import wait_until
from vkec2.domain.models import Phase

Make = Callable[..., FleetHarness]
NODE = "vk-status-0"


def _condition(obj: dict[str, Any] | None, kind: str) -> str | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


def _running_ready(api: FakeKubeApiServer, name: str) -> bool:
    pod = api.get("pods", name, "default")
    return (pod or {}).get("status", {}).get("phase") == "Running" and _condition(pod, "Ready") == "True"


def test_a_pod_whose_status_is_always_refused_is_dead_lettered_and_the_node_stays_ready(
    make_fleet: Make, apiserver: FakeKubeApiServer, start_producer: StartProducer
) -> None:
    fleet = make_fleet()
    fleet.start_worker(concurrency=4)
    apiserver.inject_error(
        "update", "pods/status", 403, "Forbidden", "admission webhook denied the request", None, "refused"
    )
    # A stall limit of 3 s: retrying the refused pod's entry for ever would make the node NotReady.
    # Worker pings get 5 s (not the usual 0.5 s): a ping lost on a loaded machine is not under test.
    proc = start_producer(
        fleet,
        NODE,
        "--outbox-stall", "3",
        "--outbox-max-attempts", "3",
        "--outbox-retry-interval", "0.2",
        "--ping-timeout", "5",
    )  # fmt: skip
    refused = apiserver.create("pods", pod_manifest("refused", NODE))["metadata"]["uid"]
    for name in ("ok-a", "ok-b"):
        apiserver.create("pods", pod_manifest(name, NODE))

    apiserver.wait_for(lambda a: _running_ready(a, "ok-a") and _running_ready(a, "ok-b"), 90, "ok pods Ready")
    wait_until(lambda: fleet.record(refused).phase is Phase.RUNNING, 90, "the refused pod to run")
    wait_until(lambda: fleet.store.outbox_dead_letters(NODE)[0] >= 1, 30, "a dead-lettered entry")
    pod = apiserver.get("pods", "refused", "default")
    assert pod is not None and (pod.get("status") or {}).get("phase") == "Pending"  # never written

    # The node stays Ready: the lease goes on being renewed past the stall limit, no health change.
    renewals = apiserver.request_count("update", "leases")
    wait_until(lambda: apiserver.request_count("update", "leases") >= renewals + 8, 20, "8 more renewals")
    assert _condition(apiserver.get("nodes", NODE), "Ready") == "True"
    assert "OutboxStalled" not in proc.output()  # the dead letter kept the consumer moving

    warnings = [
        e
        for e in apiserver.list_objects("events")
        if e["involvedObject"].get("uid") == refused and e["reason"] == "StatusUpdateRefused"
    ]
    assert warnings and warnings[0]["type"] == "Warning" and "admission webhook" in warnings[0]["message"]

    result = subprocess.run(
        [sys.executable, "-m", "vkec2.cli", "status", "-o", "json", "--config", str(fleet.config_path)],
        capture_output=True,
        text=True,
        env=fleet.env(),
        timeout=60,
        check=True,
    )
    status = json.loads(result.stdout)
    assert status["status_dead_letters"] >= 1
    newest = status["status_dead_letters_newest"][0]
    assert newest.startswith(f"{NODE} default/refused: 403 Forbidden") and "admission webhook" in newest


def test_status_entries_lost_before_the_producer_read_them_are_healed_by_the_resync(
    make_fleet: Make, apiserver: FakeKubeApiServer, start_producer: StartProducer
) -> None:
    fleet = make_fleet()
    fleet.start_worker(concurrency=2)
    proc = start_producer(fleet, NODE, "--status-resync-interval", "1")
    uid = apiserver.create("pods", pod_manifest("web", NODE))["metadata"]["uid"]
    wait_until(lambda: bool(getattr(fleet.store.get(uid), "instance_id", "")), 30, "a launch")
    proc.kill(signal.SIGSTOP)  # the producer reads nothing while the workers run the pod
    try:
        wait_until(lambda: fleet.record(uid).phase is Phase.RUNNING, 90, "the pod to run")
        fleet.store.redis.xtrim(fleet.store.keys.outbox(NODE), maxlen=0)  # every entry lost
    finally:
        proc.kill(signal.SIGCONT)
    instance = fleet.record(uid).instance_id

    def healed(a: FakeKubeApiServer) -> bool:
        annotations = ((a.get("pods", "web", "default") or {}).get("metadata") or {}).get("annotations") or {}
        return _running_ready(a, "web") and annotations.get("compute.amazonaws.com/instance-id") == instance

    apiserver.wait_for(healed, 30, "the resync to write the pod's status and instance annotation")
    wait_until(lambda: "resync: pod default/web status rewritten" in proc.output(), 10, "the resync's log")
