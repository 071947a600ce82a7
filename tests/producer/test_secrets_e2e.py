"""ConfigMaps, Secrets and projected tokens end to end: API double, producer, sealed in Redis, worker, agent.

The real ``vkec2 producer`` (Kubernetes mode, kubelet API on for ``kubectl logs``) resolves a pod's
``secretKeyRef`` env, ``envFrom`` ConfigMap, Secret volume (``items``/``mode``), ConfigMap volume and
projected service account token (TokenRequest bound to the pod) from the API double; a real worker
launches it on an agent of the process simulator (``--runtime process``, volumes "mounted" under
``VKEC2_MOUNT_ROOT``), and the real ``kubectl logs`` reads what the workload saw. Redis (the test's
own database) is scanned for the plaintext values; a ConfigMap update reaches the mounted file; a
pod whose Secret is missing waits with ``CreateContainerConfigError`` until it is created; a
hostPath pod fails with ``UnsupportedVolume`` and an Event.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import redis

from tests.k8s.apiserver import FakeKubeApiServer
from tests.producer.conftest import StartProducer, pod_manifest
from tests.support.awslike import E2E_DEFAULT
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import fleet_behind
from tests.support.kubectl_double import kubectl, kubelet_flags, kubelet_pki
from tests.support.services import free_port, port_open, wait_until
from vkec2.domain.models import Phase
from vkec2.domain.sealed import Sealer

NODE = "vk-secrets-0"
PASSWORD = "pw-5f1c9e0b7d"
GREETING = "greeting-a41d"
SCRIPT = """
echo "PASSWORD=$PASSWORD"
echo "GREETING=$CFG_GREETING"
echo "FILE=$(cat $VKEC2_MOUNT_ROOT/etc/creds/pass.txt)"
echo "MODE=$(stat -L -c %a $VKEC2_MOUNT_ROOT/etc/creds/pass.txt)"
echo "TOKEN=$(cat $VKEC2_MOUNT_ROOT/var/run/tok/token)"
last=
while :; do
  cur=$(cat $VKEC2_MOUNT_ROOT/etc/files/greeting.txt)
  if [ "$cur" != "$last" ]; then echo "SEEN=$cur"; last=$cur; fi
  sleep 0.2
done
"""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _secret_pod() -> dict[str, Any]:
    manifest = pod_manifest("reader", NODE, gates=False, grace=1)
    c = manifest["spec"]["containers"][0]
    c["command"] = ["sh", "-c", SCRIPT]
    c["env"] = [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]
    c["envFrom"] = [{"configMapRef": {"name": "app"}, "prefix": "CFG_"}]
    c["volumeMounts"] = [
        {"name": "creds", "mountPath": "/etc/creds", "readOnly": True},
        {"name": "files", "mountPath": "/etc/files"},
        {"name": "tok", "mountPath": "/var/run/tok"},
    ]
    manifest["spec"]["volumes"] = [
        {
            "name": "creds",
            "secret": {"secretName": "db", "items": [{"key": "password", "path": "pass.txt", "mode": 0o400}]},
        },
        {"name": "files", "configMap": {"name": "files"}},
        {
            "name": "tok",
            "projected": {
                "sources": [
                    {"serviceAccountToken": {"audience": "vault", "expirationSeconds": 3600, "path": "token"}}
                ]
            },
        },
    ]
    return manifest


def _redis_dump(url: str) -> bytes:
    """Every key and value of the test's own database, whatever the type."""
    client: Any = redis.Redis.from_url(url)
    out: list[bytes] = []
    try:
        for key in client.scan_iter(count=500):
            kind = client.type(key)
            out.append(key)
            if kind == b"string":
                out.append(client.get(key) or b"")
            elif kind == b"hash":
                out += [b for kv in client.hgetall(key).items() for b in kv]
            elif kind == b"list":
                out += client.lrange(key, 0, -1)
            elif kind == b"set":
                out += list(client.smembers(key))
            elif kind == b"zset":
                out += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
            elif kind == b"stream":
                out += [repr(e).encode() for e in client.xrange(key)]
    finally:
        client.close()
    return b"\n".join(out)


def _events(apiserver: FakeKubeApiServer, name: str) -> list[tuple[str, str]]:
    return [
        (str(e.get("reason")), str(e.get("message")))
        for e in apiserver.list_objects("events", "default")
        if e["involvedObject"]["name"] == name
    ]


def test_secrets_configmaps_and_tokens_reach_the_workload_sealed_and_updated(
    tmp_path: Path,
    redis_url: str,
    ec2_proxy: Ec2Proxy,
    process_sim: str,
    apiserver: FakeKubeApiServer,
    start_producer: StartProducer,
    core_api: Any,
) -> None:
    port = free_port()
    pki = kubelet_pki(tmp_path, apiserver, NODE, port)
    apiserver.create(
        "secrets", {"metadata": {"name": "db", "namespace": "default"}, "data": {"password": _b64(PASSWORD)}}
    )
    apiserver.create(
        "configmaps", {"metadata": {"name": "app", "namespace": "default"}, "data": {"GREETING": GREETING}}
    )
    apiserver.create(
        "configmaps", {"metadata": {"name": "files", "namespace": "default"}, "data": {"greeting.txt": "v1"}}
    )
    apiserver.create("serviceaccounts", {"metadata": {"name": "default", "namespace": "default"}})
    overrides = {"secrets": {"keys": [Sealer.generate_key()], "refresh_seconds": 1}}
    # The worker reaches EC2 through the AWS-like endpoint (lag, throttling, slow transitions).
    fleet = fleet_behind(ec2_proxy, tmp_path, redis_url, process_sim, overrides, aws_like=E2E_DEFAULT)
    try:
        fleet.start_worker(concurrency=2)
        producer = start_producer(fleet, NODE, *kubelet_flags(pki, port))
        wait_until(lambda: port_open(port) or not producer.alive(), 30, "the kubelet API to listen")
        uid = apiserver.create("pods", _secret_pod())["metadata"]["uid"]

        # A pod whose Secret does not exist yet waits, with the kubelet's reason, and is not dropped.
        waiting = pod_manifest("waiter", NODE, gates=False, grace=1)
        waiting["spec"]["containers"][0]["env"] = [
            {"name": "K", "valueFrom": {"secretKeyRef": {"name": "later", "key": "k"}}}
        ]
        waiter = apiserver.create("pods", waiting)["metadata"]["uid"]
        # A hostPath pod is refused, naming the volume and its type.
        host = pod_manifest("hostpath", NODE, gates=False, grace=1)
        host["spec"]["volumes"] = [{"name": "root", "hostPath": {"path": "/"}}]
        hostpath = apiserver.create("pods", host)["metadata"]["uid"]

        fleet.wait_phase([uid], {Phase.RUNNING}, timeout=60)
        home = tmp_path / "kubectl"

        def log_lines() -> list[str]:
            out = kubectl(apiserver, home, "logs", "reader", "-n", "default")
            return out.stdout.splitlines() if out.returncode == 0 else []

        wait_until(lambda: "SEEN=v1" in log_lines(), 30, "the workload to print what it read", interval=0.5)
        lines = log_lines()
        token = apiserver.tokens.requests[0]
        assert lines[:4] == [f"PASSWORD={PASSWORD}", f"GREETING={GREETING}", f"FILE={PASSWORD}", "MODE=400"]
        assert lines[4].startswith("TOKEN=tok.") and lines[4].endswith(".default.vault.reader")
        assert token["spec"]["audiences"] == ["vault"] and token["spec"]["expirationSeconds"] == 3600
        assert token["spec"]["boundObjectRef"] == {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": "reader",
            "uid": uid,
        }

        # Node-authorizer scope: only the named objects were read, nothing listed or watched.
        reads = {
            (r.verb, r.resource) for r in apiserver.request_log if r.resource in ("secrets", "configmaps")
        }
        assert reads == {("get", "secrets"), ("get", "configmaps")}

        # Redis holds no plaintext value (nor its base64 form).
        dump = _redis_dump(redis_url)
        for value in (PASSWORD, GREETING, _b64(PASSWORD), lines[4].removeprefix("TOKEN=")):
            assert value.encode() not in dump, value

        # An updated ConfigMap reaches the mounted file; env stays as launched.
        core_api.patch_namespaced_config_map("files", "default", {"data": {"greeting.txt": "v2"}})
        wait_until(
            lambda: "SEEN=v2" in log_lines(), 20, "the updated ConfigMap to reach the file", interval=0.5
        )

        fleet.wait_phase([hostpath], {Phase.FAILED}, timeout=30)
        record = fleet.record(hostpath)
        assert record.reason == "UnsupportedVolume" and "volume 'root' has type hostPath" in record.message
        wait_until(
            lambda: any(r == "UnsupportedVolume" for r, _ in _events(apiserver, "hostpath")), 20, "its Event"
        )

        assert fleet.store.get(waiter) is None
        wait_until(
            lambda: (
                ("CreateContainerConfigError", 'secret "later" not found') in _events(apiserver, "waiter")
            ),
            10,
            "the waiting pod's Event",
        )
        status = (apiserver.get("pods", "waiter", "default") or {}).get("status") or {}
        waiting_state = status["containerStatuses"][0]["state"]["waiting"]
        assert (status["phase"], waiting_state["reason"]) == ("Pending", "CreateContainerConfigError")
        apiserver.create(
            "secrets", {"metadata": {"name": "later", "namespace": "default"}, "data": {"k": _b64("v")}}
        )
        fleet.wait_phase([waiter], {Phase.RUNNING}, timeout=30)
    finally:
        fleet.stop()
