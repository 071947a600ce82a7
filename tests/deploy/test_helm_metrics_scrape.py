"""A worker started as the chart renders it: Prometheus scrapes it through the Service, its probes work.

The chart is rendered and the worker container's command, arguments and environment are taken from
the rendered Deployment; a real ``celery worker`` runs with them (Redis and plaintext agents stand in
for what the pod gets from Secrets). The test follows the metrics Service's ``targetPort`` to the
container port and scrapes it over HTTP: the server must bind every interface
(``VKEC2_METRICS__ADDRESS=0.0.0.0``), since the default, 127.0.0.1, is closed to a scraper in another
pod. Then it runs the rendered probes: readiness (``/healthz``) and liveness (``celery inspect ping``
of the pod's own worker, which fails for another host name).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import urllib.request
import uuid
from pathlib import Path

import redis
import yaml

from tests.support.helm import PREFIX, Helm, config_of, container, literal_env
from tests.support.services import ManagedProcess, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read().decode()


def test_the_rendered_worker_is_scraped_through_its_service_and_passes_its_probes(
    h: Helm, tmp_path: Path, redis_url: str
) -> None:
    port = free_port()
    cluster = f"scrape-{uuid.uuid4().hex[:8]}"
    objs = h.template(
        None,
        f"metrics.port={port}",
        f"config.cluster_name={cluster}",
        "worker.probes.pingTimeoutSeconds=2",
        "worker.queues={pods,health}",  # maintenance keeps its backlog
    )
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
    assert yaml.safe_load(config.read_text())["cluster_name"] == cluster
    env["VKEC2_CONFIG"] = str(config)
    # From Secrets in the pod: the test's Redis (with a backlog in a queue it does not consume) and plaintext
    # agents instead of the fleet CA's files.
    env["VKEC2_REDIS_URL"] = redis_url
    env.pop("VKEC2_AGENT__TLS", None)
    env["VKEC2_AGENT__INSECURE_PLAINTEXT"] = "true"
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", str(ROOT))
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    client = redis.Redis.from_url(redis_url)
    client.rpush(f"vkec2:{cluster}:celery:maintenance", "m1", "m2")
    client.close()

    argv = [shutil.which(c["command"][0]) or c["command"][0], *c["args"]]
    proc = ManagedProcess("chart-worker", argv, env=env, cwd=str(tmp_path)).start()
    try:
        ready = c["readinessProbe"]["httpGet"]
        assert ready["port"] == "metrics"

        def healthz() -> bool:
            if not proc.alive():
                raise RuntimeError(f"worker exited:\n{proc.output()[-3000:]}")
            try:
                return _get(f"http://127.0.0.1:{named[ready['port']]}{ready['path']}") == (200, "ok\n")
            except OSError:
                return False

        wait_until(healthz, 60, "the rendered worker's readiness probe", interval=0.2)
        # 127.0.0.1 stands in for the pod IP; the log shows the bind is every interface.
        assert f"metrics on http://0.0.0.0:{container_port}/metrics" in proc.output()
        status, text = _get(f"http://127.0.0.1:{container_port}/metrics")
        assert status == 200 and "# TYPE vkec2_pods_created_total counter" in text
        assert 'vkec2_queue_length{queue="maintenance"} 2.0' in text  # read from Redis at scrape time

        # Liveness: the rendered exec command, as the kubelet runs it in the pod (HOSTNAME = pod name).
        live = c["livenessProbe"]
        pod_env = {**env, "HOSTNAME": socket.gethostname()}
        run = subprocess.run(
            live["exec"]["command"],
            env=pod_env,
            capture_output=True,
            text=True,
            timeout=live["timeoutSeconds"],
        )
        assert run.returncode == 0, run.stdout + run.stderr
        other = subprocess.run(
            live["exec"]["command"],
            env={**pod_env, "HOSTNAME": "another-pod"},
            capture_output=True,
            text=True,
            timeout=live["timeoutSeconds"],
        )
        assert other.returncode != 0  # only this pod's own worker answers for it
    finally:
        proc.stop()
