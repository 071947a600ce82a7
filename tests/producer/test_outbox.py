"""The status outbox consumer on a real Redis: dead letter, no head-of-line blocking, stall semantics.

The consumer runs its real loop in a thread against a private Redis database, with a sink that
refuses chosen pods; the tests append entries to the node's stream as workers would and watch what
the sink applied, what is pending, what reached ``outbox:{node}:dead`` and what
:meth:`~producer.outbox.OutboxConsumer.stalled` says meanwhile. The resync test drives
:class:`~producer.status.KubeStatusSink` against the Kubernetes API double with a record whose
outbox entry never existed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client as k8s

from producer.deletion import Deleter
from producer.kube import Kube, KubeError
from producer.outbox import GROUP, OutboxConsumer
from producer.status import REFUSED_REASON, KubeStatusSink
from tests.k8s.apiserver import FakeKubeApiServer
from tests.producer.conftest import pod_manifest
from tests.support.services import wait_until
from vkec2.domain.models import Phase, StatusEvent, condition
from vkec2.store.redis_store import Store

NODE = "vk-outbox"
STALL = 2.0  # the stall limit the tests hold stalled() to


@dataclass
class Sink:
    """Applies entries to a list; refuses the pods in ``refuse`` (``transient``: as an unreachable API)."""

    refuse: dict[str, int] = field(default_factory=dict)  # uid -> refusals left (-1: always)
    transient_errors: bool = False
    applied: list[tuple[str, str, str]] = field(default_factory=list)  # (entry ID, uid, reason)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (entry ID, uid), every try
    dead: list[tuple[str, str, str]] = field(default_factory=list)  # (entry ID, uid, reason)

    def __call__(self, entry_id: str, event: StatusEvent) -> None:
        self.calls.append((entry_id, event.uid))
        left = self.refuse.get(event.uid, 0)
        if left:
            self.refuse[event.uid] = left - 1 if left > 0 else left
            code = 503 if self.transient_errors else 403
            raise KubeError(code, "Forbidden", f"webhook denied {event.name}")
        self.applied.append((entry_id, event.uid, event.reason))

    def transient(self, exc: Exception) -> bool:
        return self.transient_errors

    def dead_lettered(self, entry_id: str, event: StatusEvent, reason: str) -> None:
        self.dead.append((entry_id, event.uid, reason))


Run = Callable[..., OutboxConsumer]


@pytest.fixture
def run_consumer(store: Store) -> Iterator[Run]:
    """Start an OutboxConsumer's loop in a thread (fast retries); stopped after the test."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(sink: Sink, ready: threading.Event | None = None, **kwargs: Any) -> OutboxConsumer:
        options: dict[str, Any] = {"block": 0.05, "retry_interval": 0.05, "max_attempts": 3, **kwargs}
        consumer = OutboxConsumer(store, NODE, sink, name="test", **options)
        thread = threading.Thread(target=consumer.run, args=(stop, ready), daemon=True)
        thread.start()
        threads.append(thread)
        return consumer

    yield start
    stop.set()
    for thread in threads:
        thread.join(5)


def _append(store: Store, uid: str, reason: str) -> str:
    event = StatusEvent(uid=uid, namespace="default", name=f"pod-{uid}", phase=Phase.RUNNING, reason=reason)
    fields: dict[Any, Any] = event.to_fields()
    return str(store.redis.xadd(store.keys.outbox(NODE), fields))  # as a worker's write does


def test_an_always_refused_entry_is_dead_lettered_while_other_pods_flow_and_nothing_stalls(
    store: Store, run_consumer: Run
) -> None:
    sink = Sink(refuse={"bad": -1})
    consumer = run_consumer(sink)
    refused = _append(store, "bad", "Launched")
    others = [_append(store, uid, "Launched") for uid in ("a", "b", "c")]
    stalls: list[str] = []

    def dead_lettered() -> bool:
        stalls.extend(s for s in [consumer.stalled(STALL)] if s)
        return bool(sink.dead)

    wait_until(dead_lettered, 20, "the refused entry to be dead-lettered", interval=0.02)
    assert [entry for entry, _, _ in sink.applied] == others  # not held up behind "bad"
    assert sink.calls.count((refused, "bad")) == 3  # max_attempts tries
    last_try = max(i for i, call in enumerate(sink.calls) if call[1] == "bad")
    assert last_try > sink.calls.index((others[-1], "c")), "the others were applied while bad waited"
    assert sink.dead == [(refused, "bad", "403 Forbidden: webhook denied pod-bad")]
    count, [(_, dead)] = store.outbox_dead_letters(NODE)
    assert count == 1
    assert dead["entry"] == refused and dead["uid"] == "bad" and dead["attempts"] == "3"
    assert dead["error"] == "403 Forbidden: webhook denied pod-bad"
    assert store.outbox_pending(NODE, GROUP) is None  # acknowledged: nothing left pending
    assert consumer.held() == {}
    assert stalls == [] and consumer.stalled(STALL) is None


def test_a_newer_entry_of_a_held_pod_supersedes_it_and_the_order_of_a_pod_is_kept(
    store: Store, run_consumer: Run
) -> None:
    sink = Sink(refuse={"p": 2})  # refused twice, then accepted
    consumer = run_consumer(sink, max_attempts=5, retry_interval=0.5)
    first = _append(store, "p", "Launched")
    wait_until(lambda: consumer.held() == {"p": first}, 10, "the first entry to be held", interval=0.02)
    second = _append(store, "p", "AgentConnected")
    other = _append(store, "q", "Launched")

    wait_until(lambda: len(sink.applied) == 2, 10, "the newer entry and the other pod's to be applied")
    # q is not held up by p's back-off; p's newer entry (refused once more) is applied on its retry.
    assert sink.applied == [(other, "q", "Launched"), (second, "p", "AgentConnected")]
    # The held entry was never applied after the newer one (nor at all: superseded, acknowledged).
    assert [entry for entry, uid in sink.calls if uid == "p"] == [first, second, second]
    assert store.outbox_pending(NODE, GROUP) is None and consumer.held() == {}
    assert store.outbox_dead_letters(NODE)[0] == 0


def test_a_pods_failures_carry_over_to_the_entry_that_supersedes_it(store: Store, run_consumer: Run) -> None:
    sink = Sink(refuse={"bad": -1})
    consumer = run_consumer(sink, max_attempts=3, retry_interval=5.0)  # retries far apart
    first = _append(store, "bad", "Launched")
    wait_until(lambda: consumer.held() == {"bad": first}, 10, "the first try to fail", interval=0.02)
    second = _append(store, "bad", "AgentConnected")
    wait_until(lambda: consumer.held() == {"bad": second}, 10, "the second entry to be held", interval=0.02)
    third = _append(store, "bad", "Running")
    wait_until(lambda: bool(sink.dead), 10, "three failures of the pod to dead-letter its newest entry")
    assert [entry for entry, _, _ in sink.dead] == [third]
    assert store.outbox_pending(NODE, GROUP) is None


def test_transient_failures_are_retried_without_counting(store: Store, run_consumer: Run) -> None:
    sink = Sink(refuse={"t": 6}, transient_errors=True)
    run_consumer(sink, max_attempts=2, retry_interval=0.01)
    entry = _append(store, "t", "Launched")
    wait_until(lambda: bool(sink.applied), 20, "the entry to be applied once the API answers")
    assert sink.applied == [(entry, "t", "Launched")] and sink.dead == []
    assert len(sink.calls) == 7


def test_stalled_names_entries_nobody_reads(store: Store, run_consumer: Run) -> None:
    never = threading.Event()  # the first pod list never completes: the loop runs but reads nothing
    consumer = run_consumer(Sink(), ready=never)
    store.outbox_ensure_group(NODE, GROUP)
    assert consumer.stalled(0.2) is None
    _append(store, "a", "Launched")
    wait_until(lambda: consumer.stalled(0.2) is not None, 10, "the unread entry to count as a stall")
    assert "unread" in str(consumer.stalled(0.2))


def test_stalled_when_the_loop_is_silent(store: Store) -> None:
    consumer = OutboxConsumer(store, NODE, Sink(), name="test")  # never run
    consumer.last_loop -= 10
    assert "has not run for 10s" in str(consumer.stalled(5))


def test_max_attempts_must_be_positive(store: Store) -> None:
    with pytest.raises(ValueError, match="max_attempts must be at least 1, got 0"):
        OutboxConsumer(store, NODE, Sink(), max_attempts=0)


@pytest.fixture
def kube() -> Iterator[tuple[FakeKubeApiServer, Kube]]:
    server = FakeKubeApiServer(bookmark_interval=600).start()
    cfg = k8s.Configuration()
    cfg.host = server.url
    api = Kube(k8s.ApiClient(cfg))
    yield server, api
    api.close()
    server.stop()


def test_resync_rewrites_a_status_whose_entry_was_lost_and_leaves_up_to_date_pods_alone(
    store: Store, kube: tuple[FakeKubeApiServer, Kube]
) -> None:
    server, api = kube
    pod = server.create("pods", pod_manifest("web", NODE))
    uid = pod["metadata"]["uid"]
    store.put_desired(pod, NODE)
    with store.locked(uid) as lock:  # the worker's write; its outbox entry is lost (none appended)
        lock.write(
            {
                "phase": Phase.RUNNING.value,
                "instance_id": "i-0abc",
                "instance": {"InstanceId": "i-0abc", "PrivateIpAddress": "10.9.8.7"},
                "conditions": [condition("vkec2.io/InstanceReady", True, "InstanceRunning")],
            }
        )
    sink = KubeStatusSink(api, store, NODE, Deleter(api, store))
    pods, _ = api.list_pods(NODE)
    assert sink.resync(pods) == 1
    fresh = server.get("pods", "web", "default")
    assert fresh is not None
    assert fresh["status"]["phase"] == "Running" and fresh["status"]["podIP"] == "10.9.8.7"
    assert fresh["metadata"]["annotations"]["compute.amazonaws.com/instance-id"] == "i-0abc"

    writes = server.request_count("update", "pods/status"), server.request_count("patch", "pods")
    pods, _ = api.list_pods(NODE)
    assert sink.resync(pods) == 0  # up to date: no write at all
    assert (server.request_count("update", "pods/status"), server.request_count("patch", "pods")) == writes


def test_a_dead_lettered_entry_gets_a_warning_event_on_its_pod(
    store: Store, kube: tuple[FakeKubeApiServer, Kube]
) -> None:
    server, api = kube
    pod = server.create("pods", pod_manifest("web", NODE))
    event = StatusEvent(uid=pod["metadata"]["uid"], namespace="default", name="web", phase=Phase.RUNNING)
    sink = KubeStatusSink(api, store, NODE, Deleter(api, store))
    sink.dead_lettered("1-0", event, "422 Invalid: no")
    [warning] = server.list_objects("events")
    assert warning["type"] == "Warning" and warning["reason"] == REFUSED_REASON
    assert "422 Invalid: no" in warning["message"]
    server.inject_error("create", "events", 500, times=None)
    sink.dead_lettered("2-0", event, "again")  # the Event path failing never raises


def test_own_pending_entries_trimmed_from_the_stream_are_acknowledged_at_start(
    store: Store, run_consumer: Run
) -> None:
    _append(store, "gone", "Launched")
    store.outbox_ensure_group(NODE, GROUP)
    assert store.outbox_read(NODE, GROUP, "test", ">", 10)  # delivered to "test", never acknowledged
    store.redis.xtrim(store.keys.outbox(NODE), maxlen=0)
    sink = Sink()
    run_consumer(sink)  # the same consumer name, restarted
    wait_until(lambda: store.outbox_pending(NODE, GROUP) is None, 10, "the trimmed entry to be acknowledged")
    assert sink.calls == []
