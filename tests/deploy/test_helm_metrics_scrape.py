"""Prometheus reaches a worker's ``/metrics`` through the chart's Service.

The chart is rendered, the worker container's environment is taken from the rendered Deployment and a
worker's metrics start-up (the ``worker_ready`` hook) runs in a subprocess with that environment; the
test then follows the Service's ``targetPort`` to the container port and scrapes it over HTTP. The
server must bind every interface (``VKEC2_METRICS__ADDRESS=0.0.0.0``): a 127.0.0.1 bind, the default,
is closed to a scraper coming from another pod.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import redis
import yaml

from tests.support.helm import PREFIX, Helm, config_of, container, literal_env
from tests.support.services import free_port

#: The worker's start-up path: the hook Celery calls once the worker consumes, then report the bind.
_WORKER_METRICS = """
import sys
from vkec2.broker import hooks
from vkec2.observability import metrics
hooks._worker_ready()
server = metrics._server
assert server is not None, "no metrics server started"
print(server.httpd.server_address[0], server.port, flush=True)
sys.stdin.read()
"""


def test_a_scrape_through_the_worker_metrics_service_reaches_the_worker(
    h: Helm, tmp_path: Path, redis_url: str
) -> None:
    port = free_port()
    objs = h.template(None, f"metrics.port={port}")
    worker = objs.get("Deployment", f"{PREFIX}-worker")
    service = objs.get("Service", f"{PREFIX}-worker-metrics")
    c = container(worker)

    # The Service's port -> its targetPort (a name) -> the worker container's port of that name.
    (svc_port,) = service["spec"]["ports"]
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    target = svc_port["targetPort"]
    container_port = named[target] if isinstance(target, str) else target
    assert container_port == port

    env = literal_env(c)
    assert env["VKEC2_METRICS__ADDRESS"] == "0.0.0.0"
    config = tmp_path / "config.yaml"
    config.write_text(config_of(objs))
    cluster_name = yaml.safe_load(config.read_text())["cluster_name"]
    env["VKEC2_CONFIG"] = str(config)
    # From Secrets in the pod: the test's Redis (with a backlog in the pods queue) and plaintext
    # agents instead of the fleet CA's files.
    env["VKEC2_REDIS_URL"] = redis_url
    client = redis.Redis.from_url(redis_url)
    client.rpush(f"vkec2:{cluster_name}:celery:pods", "m1", "m2")
    client.close()
    env.pop("VKEC2_AGENT__TLS", None)
    env["VKEC2_AGENT__INSECURE_PLAINTEXT"] = "true"
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")

    proc = subprocess.Popen(
        [sys.executable, "-c", _WORKER_METRICS],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else "no output"
        address, served = line.split()
        assert (address, int(served)) == ("0.0.0.0", container_port)
        # 127.0.0.1 stands in for the pod IP: it reaches a 0.0.0.0 bind (and would a 127.0.0.1 one
        # too, so the bind address itself is asserted above).
        with urllib.request.urlopen(f"http://127.0.0.1:{container_port}/metrics", timeout=10) as resp:
            assert resp.status == 200
            text = resp.read().decode()
        assert "# TYPE vkec2_pods_created_total counter" in text
        assert 'vkec2_queue_length{queue="pods"} 2.0' in text  # the backlog, read at scrape time
        with urllib.request.urlopen(f"http://127.0.0.1:{container_port}/healthz", timeout=10) as resp:
            assert resp.read() == b"ok\n"
    finally:
        proc.kill()
        proc.wait(timeout=10)
