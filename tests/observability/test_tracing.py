"""Tracing: one trace links the producer's publish, the worker's task, an EC2 call and an agent call.

The producer side (:class:`producer.fleet.FleetLink`) and a real Celery worker (in a thread, on the
real Redis broker, running the real tasks) share one process with an in-memory span exporter
(:mod:`tests.observability.trace_probe`, a subprocess so the global tracer provider stays private);
the pod is created against moto and the agent simulator. Also: tracing is off by default, and the
configuration validates exporters and endpoints.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.support.fleet import FleetHarness
from vkec2.config import Settings, TracingSettings
from vkec2.observability import tracing

Make = Callable[..., FleetHarness]
ROOT = Path(__file__).resolve().parents[2]


def test_one_trace_links_producer_worker_ec2_and_agent(make_fleet: Make) -> None:
    fleet = make_fleet()
    uid = str(uuid.uuid4())
    proc = subprocess.run(
        [sys.executable, "-m", "tests.observability.trace_probe", str(fleet.config_path), uid],
        cwd=ROOT,
        env=fleet.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    spans: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    print("\n".join(f"{s['trace_id'][:8]} {s['kind']:8} {s['name']}" for s in spans))
    by_id = {s["span_id"]: s for s in spans}

    publish = [
        s
        for s in spans
        if s["kind"] == "PRODUCER" and s["name"] == "apply_async/vkec2.pods.create" and s["parent_id"] is None
    ]
    assert len(publish) == 1, [s["name"] for s in spans]  # the producer's publish is the root
    trace_id = publish[0]["trace_id"]
    trace = [s for s in spans if s["trace_id"] == trace_id]

    runs = [s for s in trace if s["kind"] == "CONSUMER" and s["name"] == "run/vkec2.pods.create"]
    assert runs and runs[0]["parent_id"] == publish[0]["span_id"]  # context travelled in the headers
    ec2 = [s for s in trace if s["attributes"].get("rpc.method") == "RunInstances"]
    assert len(ec2) == 1 and ec2[0]["kind"] == "CLIENT"
    agent = [s for s in trace if s["kind"] == "CLIENT" and s["name"].endswith("/LaunchApplication")]
    assert len(agent) == 1 and agent[0]["attributes"].get("rpc.system") == "grpc"

    def task_of(span: dict[str, Any]) -> dict[str, Any]:
        while span["kind"] != "CONSUMER":
            span = by_id[span["parent_id"]]
        return span

    # Each call is a child of a task run; every run descends from the one publish.
    assert task_of(ec2[0])["name"] == task_of(agent[0])["name"] == "run/vkec2.pods.create"
    every_run = [s for s in spans if s["name"] == "run/vkec2.pods.create"]
    assert len(every_run) >= 2 and {s["trace_id"] for s in every_run} == {trace_id}  # the whole chain


def test_tracing_is_off_by_default() -> None:
    assert Settings().tracing.exporter == "none"
    assert tracing.setup(TracingSettings(), "worker") is False
    assert not tracing.enabled()


def test_tracing_settings_are_validated() -> None:
    TracingSettings(exporter="otlp", otlp_endpoint="http://collector:4318/v1/traces")
    with pytest.raises(ValidationError):
        TracingSettings(exporter="zipkin")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        TracingSettings(exporter="otlp", otlp_endpoint="collector:4318")
