"""The kubelet API's stats without a fleet: aggregation, Prometheus texts, the cached fan-out, authorization.

Agents are fakes returning fixed :class:`~agent.stats.InstanceStats` (or failing, or hanging), so the
sums, the field names and the sample timestamps can be checked exactly; a metrics-server stand-in
(:mod:`tests.support.metrics_client`) reads both endpoints and prints ``kubectl top pod``. The
authorization test serves the endpoints through the secured in-process kubelet API.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from agent.stats import ContainerUsage, CpuUsage, FsUsage, InstanceStats, InterfaceUsage, MemoryUsage
from producer.kubelet import KubeletServer, serving_context
from producer.kubelet.stats import PodUsage, Scrape, StatsCollector
from producer.kubelet.summary import node_metrics, resource_metrics, summary
from tests.k8s.kubelet_double import AccessRule
from tests.support.kubelet_auth import APISERVER_USER, secured_kubelet
from tests.support.metrics_client import from_resource_metrics, from_summary, pod_usage, top_pods
from vkec2.config import AgentConnection, Settings
from vkec2.domain.agents import AgentTarget
from vkec2.domain.models import PodRecord
from vkec2.domain.phases import Phase
from vkec2.errors import AgentUnavailable
from vkec2.store.redis_store import Store

MI = 1024 * 1024
T0 = 1_800_000_000.0


def _record(name: str, phase: Phase = Phase.RUNNING, **kw: Any) -> PodRecord:
    return PodRecord(
        uid=f"uid-{name}",
        namespace="default",
        name=name,
        phase=phase,
        endpoint=f"static:127.0.0.1:{abs(hash(name)) % 60000 + 1000}",
        instance_id=f"i-{name}",
        launching_at=T0 - 100,
        **kw,
    )


def _stats(
    t: float, millicores: float, memory: int, *, containers: int = 1, known: bool = True
) -> InstanceStats:
    cs = tuple(
        ContainerUsage(
            f"c{i}",
            T0 - 50,
            CpuUsage(int(millicores * 1e6 * (t - (T0 - 50)))),
            MemoryUsage(working_set=memory, usage=memory, rss=memory),
        )
        for i in range(containers)
    )
    return InstanceStats(
        t,
        boot_time=T0 - 200,
        cpu=CpuUsage(10**12, 50_000_000),
        memory=MemoryUsage(
            working_set=200 * MI, usage=300 * MI, rss=100 * MI, available=(700 * MI if known else None)
        ),
        root_fs=FsUsage("/", 8 * 1024 * MI, 2 * 1024 * MI, 6 * 1024 * MI, 1000, 600),
        pod_fs=FsUsage("/var/lib/vkec2", 8 * 1024 * MI, 2 * 1024 * MI, 6 * 1024 * MI, 1000, 600),
        interfaces=(InterfaceUsage("eth0", 1000, 500),),
        containers=cs,
    )


def _scrape(t: float, errors: int = 0) -> Scrape:
    return Scrape(
        t,
        (
            PodUsage(_record("web-0"), _stats(t, 3, 12 * MI)),
            PodUsage(_record("web-1"), _stats(t, 250, 64 * MI, containers=2, known=False)),
        ),
        errors,
    )


def test_summary_sums_pods_into_the_node_and_omits_what_is_unknown() -> None:
    doc = summary("vk-0", _scrape(T0), T0 - 500)
    node = doc["node"]
    assert node["nodeName"] == "vk-0" and node["startTime"].endswith("Z")
    assert node["cpu"]["usageCoreNanoSeconds"] == 2 * 10**12 and node["cpu"]["usageNanoCores"] == 100_000_000
    assert node["memory"]["workingSetBytes"] == 400 * MI and node["memory"]["usageBytes"] == 600 * MI
    assert "availableBytes" not in node["memory"]  # one instance did not say: no made-up total
    assert node["fs"]["capacityBytes"] == 16 * 1024 * MI and node["fs"]["inodesUsed"] == 800
    assert node["network"]["name"] == "eth0" and node["network"]["rxBytes"] == 2000
    assert node["network"]["interfaces"] == [
        {"name": "eth0", "rxBytes": 2000, "rxErrors": 0, "txBytes": 1000, "txErrors": 0}
    ]
    web0, web1 = doc["pods"]
    assert web0["podRef"] == {"name": "web-0", "namespace": "default", "uid": "uid-web-0"}
    [c] = web0["containers"]
    assert (
        set(c) == {"name", "startTime", "cpu", "memory"} and c["cpu"]["usageCoreNanoSeconds"] == 150_000_000
    )
    assert set(c["memory"]) == {"time", "usageBytes", "workingSetBytes", "rssBytes"}
    assert web1["memory"]["workingSetBytes"] == 128 * MI  # a pod is the sum of its containers
    assert web1["cpu"]["usageCoreNanoSeconds"] == 2 * 250_000_000 * 50
    assert (
        web0["ephemeral-storage"]["capacityBytes"] == 8 * 1024 * MI
        and "usedBytes" not in web0["ephemeral-storage"]
    )
    assert summary("vk-0", Scrape(T0, (), 0), T0)["node"]["cpu"]["usageCoreNanoSeconds"] == 0


def test_resource_metrics_as_metrics_server_reads_them_and_kubectl_top() -> None:
    first, second = (
        resource_metrics(_scrape(T0)).decode(),
        resource_metrics(_scrape(T0 + 15, errors=1)).decode(),
    )
    lines = first.splitlines()
    assert "# TYPE container_cpu_usage_seconds_total counter" in lines
    cpu = 'container_cpu_usage_seconds_total{container="c0",namespace="default",pod="web-0"}'
    assert f"{cpu} 0.15 {int(T0 * 1000)}" in lines  # cumulative seconds, stamped in milliseconds
    assert f"node_memory_working_set_bytes 4.194304e+08 {int(T0 * 1000)}" in lines  # as Go prints it
    assert 'pod_memory_working_set_bytes{namespace="default",pod="web-1"}' in first
    starts = [
        x
        for f in text_string_to_metric_families(first)
        for x in f.samples
        if x.name.endswith("start_time_seconds")
    ]
    assert len(starts) == 3 and {x.value for x in starts} == {T0 - 50}
    assert "scrape_error 0.0" in lines and "scrape_error 1.0" in second.splitlines()
    usage = pod_usage(from_resource_metrics(first), from_resource_metrics(second))
    assert top_pods(usage).splitlines() == [
        "NAME    CPU(cores)   MEMORY(bytes)",
        "web-0   3m           12Mi",
        "web-1   500m         128Mi",
    ]
    # The Summary API gives metrics-server the same answer.
    docs = [json.loads(json.dumps(summary("vk-0", _scrape(t), T0))) for t in (T0, T0 + 15)]
    assert pod_usage(from_summary(docs[0]), from_summary(docs[1])) == usage


def test_node_metrics_count_running_pods_and_container_states() -> None:
    statuses = [
        {"name": "a", "state": {"running": {}}},
        {"name": "b", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {}}},
        {"name": "c", "state": {"waiting": {"reason": "ContainerCreating"}}},
    ]
    records = [
        _record("web-0", container_statuses=statuses),
        _record("queued", Phase.PROVISIONING, container_statuses=statuses),
    ]
    text = node_metrics("vk-0", records, Scrape(T0, (), 2)).decode().splitlines()
    assert 'kubelet_node_name{node="vk-0"} 1.0' in text and "kubelet_running_pods 1.0" in text
    for state, n in (("running", 1), ("exited", 1), ("created", 1), ("unknown", 0)):
        assert f'kubelet_running_containers{{container_state="{state}"}} {n}.0' in text
    assert "vkec2_kubelet_stats_agents_left_out 2.0" in text


class FakeAgents:
    """Agents by instance: fixed stats, a failure, or a hang until released."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = threading.Event()
        self.lock = threading.Lock()

    def stats(self, target: AgentTarget, timeout: float | None = None) -> InstanceStats:
        with self.lock:
            self.calls.append(target.instance_id)
        if target.instance_id == "i-dead":
            raise AgentUnavailable("agent of i-dead: UNAVAILABLE")
        if target.instance_id == "i-slow":
            self.release.wait(30)
        return _stats(time.time(), 3, 12 * MI)


def test_fan_out_is_cached_shared_and_never_held_up_by_a_slow_or_dead_agent() -> None:
    agents = FakeAgents()
    now = [0.0]
    records = [
        _record("web-0"),
        _record("dead"),
        _record("slow"),
        _record("pending", Phase.PROVISIONING),
        _record("gone", deleted=True),
    ]
    collector = StatsCollector(lambda: records, lambda: agents, timeout=0.5, ttl=10, clock=lambda: now[0])
    try:
        start = time.monotonic()
        results: list[Scrape] = []
        threads = [threading.Thread(target=lambda: results.append(collector.scrape())) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert time.monotonic() - start < 2.5  # the slow agent costs the timeout, not its hang
        assert len(results) == 4 and all(r is results[0] for r in results)  # one fan-out, shared
        scrape = results[0]
        assert [p.record.name for p in scrape.pods] == ["web-0"]
        assert scrape.errors == 2 and scrape.left_out == ("default/dead", "default/slow")
        assert sorted(agents.calls) == ["i-dead", "i-slow", "i-web-0"]  # not pending, not deleted
        now[0] = 5.0
        assert collector.scrape() is scrape and len(agents.calls) == 3  # cached
        now[0] = 11.0
        agents.release.set()
        assert collector.scrape() is not scrape and len(agents.calls) == 6
    finally:
        agents.release.set()
        collector.close()


def test_stats_and_metrics_are_authorized_as_nodes_stats_and_nodes_metrics(
    redis_url: str, tmp_path: Path
) -> None:
    with secured_kubelet(redis_url, tmp_path) as k:
        k.apiserver.auth.tokens["scraper"] = {"username": "metrics-server"}
        k.apiserver.auth.rules += [
            AccessRule(allow=True, user="metrics-server", subresource="stats"),
            AccessRule(allow=False, user="metrics-server", subresource="metrics", reason="no RBAC rule"),
        ]
        api = k.api()
        bearer = {"Authorization": "Bearer scraper"}
        assert api.get("/stats/summary")[0] == 401
        status, body = api.get("/stats/summary", headers=bearer)
        assert status == 200 and json.loads(body)["node"]["nodeName"] == k.server.node
        for path in ("/metrics/resource", "/metrics"):
            status, body = api.get(path, headers=bearer)
            assert status == 403 and b"subresource=metrics" in body, path
        k.apiserver.auth.rules.append(AccessRule(allow=True, user=APISERVER_USER, subresource="metrics"))
        status, body = k.api(k.ca).get("/metrics/resource")  # the API server's client certificate
        assert status == 200 and b"\nscrape_error 0.0\n" in body


def test_the_fan_out_timing_comes_from_the_kubelet_stats_settings(redis_url: str) -> None:
    settings = Settings.model_validate({"kubelet_stats": {"timeout_seconds": 1.5, "cache_seconds": 0}})
    store = Store.from_url(redis_url, f"t-{uuid.uuid4().hex[:8]}")
    server = KubeletServer(
        store, "vk-0", AgentConnection(), serving_context("vk-0"), port=0, stats=settings.kubelet_stats
    )
    assert (server.stats.timeout, server.stats.ttl) == (1.5, 0)
    store.close()
    for bad in ({"timeout_seconds": 0}, {"cache_seconds": -1}, {"timeout_seconds": 61}, {"nope": 1}):
        with pytest.raises(ValidationError, match="kubelet_stats"):
            Settings.model_validate({"kubelet_stats": bad})
