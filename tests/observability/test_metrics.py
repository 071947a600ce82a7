"""Prometheus metrics scraped over HTTP from a real worker after one pod's whole lifecycle.

The worker is a real ``celery -A tasks worker`` subprocess with ``metrics.port`` set to a free
port; the pod goes Pending → Running against moto and the agent simulator, then is deleted. The
scrape must show each counter once and one observation in each lifecycle phase histogram. The
standalone producer serves the same endpoint and counts what it publishes.
"""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fleet import NODE, FleetHarness, example_pod
from tests.support.services import ManagedProcess, free_port, wait_until
from vkec2.domain.models import Phase

Make = Callable[..., FleetHarness]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every sample of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def test_scraped_metrics_after_a_lifecycle(make_fleet: Make) -> None:
    port = free_port()
    fleet = make_fleet(metrics={"port": port}, warm_pools=[{"name": "idle", "desired_count": 0}])
    fleet.start_worker(concurrency=2, queues="pods")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        assert resp.status == 200 and resp.read() == b"ok\n"

    uid = fleet.submit(example_pod("metrics-web"))
    fleet.wait_phase([uid], {Phase.RUNNING})
    running = scrape(port)
    fleet.delete(uid)
    fleet.wait_phase([uid], {Phase.TERMINATED})
    # The counters move right after the state write the harness waits for: await them on the scrape.
    wait_until(
        lambda: total(scrape(port), "vkec2_tasks_total", task="vkec2.pods.delete") >= 1,
        30,
        "the delete task to be counted",
    )
    m = scrape(port)

    assert value(running, "vkec2_pods_created_total") == 1
    assert value(running, "vkec2_pods_deleted_total") == 0
    assert value(m, "vkec2_pods_created_total") == 1
    assert value(m, "vkec2_pods_deleted_total") == 1
    assert value(m, "vkec2_ec2_launched_total") == 1
    assert value(m, "vkec2_ec2_launch_errors_total") == 0
    assert value(m, "vkec2_ec2_terminated_total") == 1
    assert value(m, "vkec2_ec2_calls_total", action="RunInstances", outcome="ok") == 1
    assert value(m, "vkec2_ec2_calls_total", action="TerminateInstances", outcome="ok") == 1
    assert value(m, "vkec2_ec2_calls_total", action="DescribeInstances", outcome="ok") >= 1
    assert total(m, "vkec2_ec2_calls_total", action="RunInstances") == 1  # no other outcome
    assert total(m, "vkec2_ec2_throttles_total") == 0
    # One observation per lifecycle phase, one RunInstances latency.
    assert value(m, "vkec2_ec2_run_instances_seconds_count") == 1
    assert value(m, "vkec2_pod_boot_seconds_count") == 1
    assert value(m, "vkec2_pod_agent_ready_seconds_count") == 1
    assert value(m, "vkec2_pod_launch_seconds_count") == 1
    for phase in ("Provisioning", "Booting", "Launching", "Running", "Terminating", "Terminated"):
        assert value(m, "vkec2_pod_phase_transitions_total", phase=phase) == 1, phase
    # Every task that ran was timed in the queue: the create chain (first step + continuations).
    creates = total(m, "vkec2_tasks_total", task="vkec2.pods.create")
    assert creates >= 2
    assert value(m, "vkec2_task_queue_wait_seconds_count", task="vkec2.pods.create") == creates
    # The delete is a chain too: its first step asks the workload to stop, the next terminates.
    assert value(m, "vkec2_task_queue_wait_seconds_count", task="vkec2.pods.delete") >= 1
    # Agent calls: the workload was launched and stopped once, over gRPC.
    assert value(m, "vkec2_agent_calls_total", method="LaunchApplication", code="OK") == 1
    assert value(m, "vkec2_agent_calls_total", method="TerminateApplication", code="OK") == 1
    assert total(m, "vkec2_agent_calls_total", method="Check") >= 1
    # The warm pool gauge is read from Redis at scrape time (an empty pool here).
    assert value(m, "vkec2_warm_pool_instances", pool="idle", state="Ready") == 0
    assert ("vkec2_warm_pool_instances", (("pool", "idle"), ("state", "Provisioning"))) in m


def test_the_producer_serves_metrics(make_fleet: Make, tmp_path: Path) -> None:
    port = free_port()
    fleet = make_fleet(metrics={"port": port})
    manifests = tmp_path / "pods"
    manifests.mkdir()
    pod = example_pod("from-manifest")
    del pod["metadata"]["uid"]  # standalone mode derives the UID
    (manifests / "web.yaml").write_text(yaml.safe_dump(pod))
    argv = [
        sys.executable,
        "-m",
        "vkec2.cli",
        "producer",
        "--config",
        str(fleet.config_path),
        "--node-name",
        NODE,
        "--manifests",
        str(manifests),
    ]
    proc = ManagedProcess("producer-metrics", argv, env=fleet.env()).start()
    try:

        def published() -> bool:
            if not proc.alive():
                raise RuntimeError(f"producer exited:\n{proc.output()[-3000:]}")
            try:
                samples = scrape(port)
            except OSError:
                return False
            return value(samples, "vkec2_tasks_published_total", task="vkec2.pods.create") >= 1

        wait_until(published, 30, "the producer to publish the manifest's create")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert resp.read() == b"ok\n"
        assert "component=producer" in proc.output()
    finally:
        proc.stop()
