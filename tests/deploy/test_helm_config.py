"""The chart's configuration as the fleet sees it: the ConfigMap through ``vkec2 config check`` with
each container's environment, the fleet CA, config rolls, Redis URLs and secrets, Flower auth, metrics.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.helm import (
    PREFIX,
    PROD_VALUES,
    ROOT,
    Helm,
    Obj,
    Objects,
    config_of,
    container,
    env_of,
    fleet_workloads,
    literal_env,
    pod_spec,
)


def _config_check(config_text: str, env: dict[str, str], tmp: Path) -> subprocess.CompletedProcess[str]:
    path = tmp / "config.yaml"
    path.write_text(config_text)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VKEC2_")}
    return subprocess.run(
        [sys.executable, "-m", "vkec2.cli", "config", "check", str(path), "-o", "json"],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=ROOT,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("values", [None, PROD_VALUES], ids=["defaults", "production"])
def test_configmap_passes_config_check_in_every_container(
    h: Helm, tmp_path: Path, values: Obj | None
) -> None:
    objs = h.template(values)
    text = config_of(objs)
    cm_name = f"{PREFIX}-config"
    environments: dict[frozenset[tuple[str, str]], str] = {}
    for w in fleet_workloads(objs):
        c = container(w)
        env = literal_env(c)
        # VKEC2_CONFIG names the ConfigMap's key where the ConfigMap is mounted.
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(w)["volumes"]}
        assert volumes["config"]["configMap"]["name"] == cm_name
        assert env.pop("VKEC2_CONFIG") == f"{mounts['config']}/config.yaml"
        if values is None:
            assert env["VKEC2_REDIS_URL"] == f"redis://:$(REDIS_PASSWORD)@{PREFIX}-redis:6379/0"
            env["VKEC2_REDIS_URL"] = env["VKEC2_REDIS_URL"].replace("$(REDIS_PASSWORD)", "stand-in")
        # Secret-held values (the Redis URL) get a stand-in; every literal VKEC2_* value is checked.
        for name, entry in env_of(c).items():
            if "valueFrom" in entry and "secretKeyRef" in entry["valueFrom"] and name.startswith("VKEC2_"):
                env[name] = "redis://:stand-in@redis.example:6379/0"
                if name == "VKEC2_SECRETS__KEYS":  # the sealing keys: a JSON list of Fernet keys
                    env[name] = json.dumps([base64.urlsafe_b64encode(bytes(32)).decode()])
        environments.setdefault(frozenset(env.items()), w["metadata"]["name"])
    assert len(environments) >= 2  # the producer/workers (metrics) and beat/Flower differ
    for env_items, workload in environments.items():  # one check per distinct environment
        proc = _config_check(text, dict(env_items), tmp_path)
        assert proc.returncode == 0, f"{workload}: {proc.stderr}"
        effective = json.loads(proc.stdout)
        expected = values or {}
        assert effective["cluster_name"] == expected.get("config", {}).get("cluster_name", "vkec2")
        assert effective["node"]["os"] == expected.get("nodeOS", "linux")
        assert effective["node"]["kubelet_port"] == 10250
        if values is not None:
            assert effective["ec2"]["subnets"] == ["subnet-0a", "subnet-0b"]
            assert effective["warm_pools"][0]["name"] == "mac"


def test_a_sentinel_url_and_its_master_name_pass_config_check(h: Helm, tmp_path: Path) -> None:
    url = "sentinel://:s3cret@s1.example:26379/0;sentinel://s2.example:26379;sentinel://s3.example:26379"
    objs = h.template(
        None, "redis.bundled.enabled=false", f"redis.url={url}", "config.redis_sentinel_master=main"
    )
    assert objs.get("Secret", f"{PREFIX}-redis")["stringData"] == {"redis-url": url}
    tls = literal_env(container(objs.get("Deployment", f"{PREFIX}-worker")))["VKEC2_AGENT__TLS"]
    proc = _config_check(config_of(objs), {"VKEC2_REDIS_URL": url, "VKEC2_AGENT__TLS": tls}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["redis_sentinel_master"] == "main"
    assert "s3cret" not in proc.stdout + proc.stderr
    unnamed = _config_check(config_of(h.template()), {"VKEC2_REDIS_URL": url}, tmp_path)
    assert unnamed.returncode == 1 and "redis_sentinel_master" in unnamed.stderr


def test_a_bad_configuration_renders_but_config_check_names_the_key(h: Helm, tmp_path: Path) -> None:
    objs = h.template(None, "config.agent.port=70000")
    proc = _config_check(config_of(objs), {}, tmp_path)
    assert proc.returncode == 1
    assert "agent.port" in proc.stderr


def test_fleet_ca_key_is_mounted_into_workers_only(h: Helm, tmp_path: Path) -> None:
    objs = h.template(PROD_VALUES, "agentTls.certKey=ca.pem", "agentTls.keyKey=ca-key.pem")
    worker = objs.get("Deployment", f"{PREFIX}-worker")
    c = container(worker)
    tls = json.loads(literal_env(c)["VKEC2_AGENT__TLS"])
    mount = next(m for m in c["volumeMounts"] if m["name"] == "fleet-ca")
    volume = next(v for v in pod_spec(worker)["volumes"] if v["name"] == "fleet-ca")
    assert volume["secret"]["secretName"] == "vkec2-fleet-ca"
    files = {f"{mount['mountPath']}/{item['path']}": item["key"] for item in volume["secret"]["items"]}
    assert files == {tls["ca_cert_file"]: "ca.pem", tls["ca_key_file"]: "ca-key.pem"}
    # The effective configuration of a worker has agent.tls pointing at those files.
    env = {**literal_env(c), "VKEC2_REDIS_URL": "redis://r:6379/0"}
    env.pop("VKEC2_CONFIG")
    proc = _config_check(config_of(objs), env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["agent"]["tls"]["ca_key_file"] == tls["ca_key_file"]
    # The CA key reaches no other pod: the producer has its own client certificate, beat and Flower
    # the CA certificate only (the configuration rule refuses plaintext agents everywhere).
    for w in objs.workloads():
        if w is worker:
            continue
        for v in pod_spec(w).get("volumes", []):
            if "secret" in v and v["secret"]["secretName"] == "vkec2-fleet-ca":
                assert [item["key"] for item in v["secret"]["items"]] == ["ca.pem"]
        agent_tls = literal_env(container(w)).get("VKEC2_AGENT__TLS")
        if w["metadata"]["name"] == f"{PREFIX}-redis":
            assert agent_tls is None
            continue
        assert agent_tls is not None and "ca_key_file" not in json.loads(agent_tls)
    producer = objs.get("StatefulSet", f"{PREFIX}-producer")
    ptls = json.loads(literal_env(container(producer))["VKEC2_AGENT__TLS"])
    assert set(ptls) == {"ca_cert_file", "client_cert_file", "client_key_file"}
    volume = next(v for v in pod_spec(producer)["volumes"] if v["name"] == "agent-client")
    assert volume["secret"]["secretName"] == "vkec2-producer-agent-client"


def test_config_changes_roll_the_pods(h: Helm) -> None:
    def checksums(objs: Objects) -> set[str]:
        return {
            w["spec"]["template"]["metadata"]["annotations"]["checksum/config"] for w in fleet_workloads(objs)
        }

    before = checksums(h.template())
    after = checksums(h.template(None, "config.health.interval_seconds=30"))
    assert len(before) == len(after) == 1
    assert before != after


# --- Redis, Flower, metrics ---------------------------------------------------------------------------


def _redis_env(objs: Objects) -> list[Obj]:
    return [env_of(container(w))["VKEC2_REDIS_URL"] for w in fleet_workloads(objs)]


def test_external_redis_url_is_kept_in_a_secret(h: Helm) -> None:
    objs = h.template(PROD_VALUES)
    assert objs.maybe("Deployment", f"{PREFIX}-redis") is None
    secret = objs.get("Secret", f"{PREFIX}-redis")
    assert secret["stringData"] == {"redis-url": PROD_VALUES["redis"]["url"]}
    refs = _redis_env(objs)
    assert len(refs) == 4
    for ref in refs:
        assert ref == {
            "name": "VKEC2_REDIS_URL",
            "valueFrom": {"secretKeyRef": {"name": f"{PREFIX}-redis", "key": "redis-url"}},
        }
    # The password never appears outside the Secret.
    assert objs.text.count("s3cret") == 1

    existing = h.template(
        None,
        "redis.bundled.enabled=false",
        "redis.existingSecret.name=shared-redis",
        "redis.existingSecret.key=url",
    )
    assert existing.maybe("Secret", f"{PREFIX}-redis") is None
    for ref in _redis_env(existing):
        assert ref["valueFrom"]["secretKeyRef"] == {"name": "shared-redis", "key": "url"}


def test_bundled_redis_is_reachable_under_the_url_the_fleet_uses(h: Helm) -> None:
    objs = h.template()
    svc = objs.get("Service", f"{PREFIX}-redis")
    deploy = objs.get("Deployment", f"{PREFIX}-redis")
    assert svc["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["port"] == 6379
    password = env_of(container(deploy))["REDIS_PASSWORD"]["valueFrom"]
    for w in fleet_workloads(objs):
        env = env_of(container(w))
        # The URL holds the password by reference; the kubelet expands $(REDIS_PASSWORD) from the Secret.
        assert (
            env["VKEC2_REDIS_URL"]["value"] == f"redis://:$(REDIS_PASSWORD)@{svc['metadata']['name']}:6379/0"
        )
        assert env["REDIS_PASSWORD"]["valueFrom"] == password
        names = [e["name"] for e in container(w)["env"]]
        assert names.index("REDIS_PASSWORD") < names.index("VKEC2_REDIS_URL")  # defined before use


def test_flower_requires_basic_auth(h: Helm) -> None:
    objs = h.template()
    flower = objs.get("Deployment", f"{PREFIX}-flower")
    c = container(flower)
    assert c["command"] == ["celery"] and c["args"][:3] == ["-A", "tasks", "flower"]
    ref = env_of(c)["FLOWER_BASIC_AUTH"]["valueFrom"]["secretKeyRef"]
    secret = objs.get("Secret", ref["name"])
    user, _, password = base64.b64decode(secret["data"][ref["key"]]).decode().partition(":")
    assert user == "admin" and len(password) == 24 and password.isalnum()
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthcheck"
    svc = objs.get("Service", f"{PREFIX}-flower")
    assert svc["spec"]["selector"] == flower["spec"]["selector"]["matchLabels"]

    own = h.template(PROD_VALUES)
    assert own.maybe("Secret", f"{PREFIX}-flower-auth") is None
    ref = env_of(container(own.get("Deployment", f"{PREFIX}-flower")))["FLOWER_BASIC_AUTH"]
    assert ref["valueFrom"]["secretKeyRef"] == {"name": "flower-users", "key": "users"}

    off = h.template(None, "flower.enabled=false")
    assert not [k for k in off.kinds() if "flower" in k[1]]


def test_metrics_port_and_service_monitor(h: Helm) -> None:
    objs = h.template(PROD_VALUES)
    for name in ("worker", "producer"):
        w = next(w for w in objs.workloads() if w["metadata"]["name"] == f"{PREFIX}-{name}")
        c = container(w)
        assert literal_env(c)["VKEC2_METRICS__PORT"] == "9300"
        assert {"name": "metrics", "containerPort": 9300, "protocol": "TCP"} in c["ports"]
    monitor = objs.get("ServiceMonitor", PREFIX)
    assert monitor["metadata"]["labels"]["release"] == "prom"
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = {
        s["metadata"]["name"]
        for s in objs.of_kind("Service")
        if selector.items() <= s["metadata"]["labels"].items()
    }
    assert scraped == {f"{PREFIX}-producer", f"{PREFIX}-worker-metrics"}
    for name in scraped:
        ports = {p["name"]: p["port"] for p in objs.get("Service", name)["spec"]["ports"]}
        assert ports["metrics"] == 9300
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"

    assert h.template().maybe("ServiceMonitor", PREFIX) is None
    off = h.template(None, "metrics.enabled=false")
    assert off.maybe("Service", f"{PREFIX}-worker-metrics") is None
    for w in fleet_workloads(off):
        c = container(w)
        assert "VKEC2_METRICS__PORT" not in env_of(c)
        assert all(p["name"] != "metrics" for p in c.get("ports", []))
