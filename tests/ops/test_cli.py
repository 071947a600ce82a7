"""The ``vkec2`` CLI against a real Redis and moto's EC2 server: tables, JSON, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
import yaml

from tests.support.fleet import TEST_AMI
from tests.support.services import free_port
from vkec2.contract import TAG_CLUSTER, TAG_POD_UID
from vkec2.domain.breaker import BreakerState
from vkec2.domain.models import Phase
from vkec2.store.redis_store import Store


def run_cli(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vkec2.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, moto_url: str) -> Iterator[dict[str, Any]]:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "vkec2.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cluster_name": name,
                "redis_url": redis_url,
                "aws": {"endpoint_url": moto_url, "max_attempts": 1},
            }
        )
    )
    store = Store.from_url(redis_url, name)
    uid = str(uuid.uuid4())
    store.put_desired({"metadata": {"uid": uid, "name": "builder", "namespace": "ci"}, "spec": {}}, "node-a")
    ec2 = boto3.client("ec2", endpoint_url=moto_url, region_name="us-west-2")
    inst = ec2.run_instances(
        ImageId=TEST_AMI,
        InstanceType="m5.large",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [{"Key": TAG_CLUSTER, "Value": name}, {"Key": TAG_POD_UID, "Value": uid}],
            }
        ],
    )
    iid = inst["Instances"][0]["InstanceId"]
    with store.locked(uid) as lock:
        lock.write({"phase": Phase.RUNNING.value, "instance_id": iid})
    yield {"config": config, "uid": uid, "instance": iid, "store": store, "name": name}
    store.redis.close()


def test_status_summarises_the_fleet(cluster: dict[str, Any]) -> None:
    result = run_cli("status", "-o", "json", config=cluster["config"])
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["cluster"] == cluster["name"] and status["nodes"] == ["node-a"]
    assert status["pods"] == 1 and status["pods_by_phase"] == {"Running": 1}
    assert status["remediation"]["paused"] is False and status["beat"]["missing"] is True  # no beat ran
    table = run_cli("status", config=cluster["config"])
    assert table.returncode == 0 and "pods_by_phase" in table.stdout


def test_status_shows_an_open_remediation_breaker_and_a_live_beat(cluster: dict[str, Any]) -> None:
    store = cluster["store"]
    store.put_remediation_breaker(
        BreakerState(open=True, failure="unreachable", scope="worker", worker="w/7", message="cut off")
    )
    store.record_result("vkec2.health.sweep", {"pods": 1})
    status = json.loads(run_cli("status", "-o", "json", config=cluster["config"]).stdout)
    assert status["remediation"]["paused"] is True and status["remediation"]["worker"] == "w/7"
    assert status["remediation"]["reason"] == "WorkerCannotReachAgents"
    assert status["beat"]["missing"] is False


def test_pods_lists_phase_instance_and_age(cluster: dict[str, Any]) -> None:
    result = run_cli("pods", "-o", "json", config=cluster["config"])
    assert result.returncode == 0, result.stderr
    [pod] = json.loads(result.stdout)
    assert (
        pod["uid"] == cluster["uid"] and pod["phase"] == "Running" and pod["instance"] == cluster["instance"]
    )
    assert pod["name"] == "builder" and pod["namespace"] == "ci" and pod["age"].endswith("s")
    table = run_cli("pods", config=cluster["config"])
    assert "builder" in table.stdout and cluster["instance"] in table.stdout


def test_instances_lists_the_clusters_instances_with_tags(cluster: dict[str, Any]) -> None:
    result = run_cli("instances", "-o", "json", config=cluster["config"])
    assert result.returncode == 0, result.stderr
    [inst] = json.loads(result.stdout)
    assert inst["instance"] == cluster["instance"] and inst["pod_uid"] == cluster["uid"]
    assert inst["state"] in ("pending", "running")


def test_replay_publishes_the_task_as_celery_call_would(cluster: dict[str, Any], redis_url: str) -> None:
    result = run_cli(
        "replay", "vkec2.pods.create", "--uid", cluster["uid"], "-o", "json", config=cluster["config"]
    )
    assert result.returncode == 0, result.stderr
    sent = json.loads(result.stdout)
    client = redis.Redis.from_url(redis_url)
    [raw] = client.lrange(f"vkec2:{cluster['name']}:celery:pods", 0, -1)  # kombu's global_keyprefix
    message = json.loads(raw)
    assert message["headers"]["task"] == "vkec2.pods.create" and message["headers"]["id"] == sent["task_id"]
    body = json.loads(__import__("base64").b64decode(message["body"]))
    assert body[1] == {"uid": cluster["uid"]}


def test_replay_refuses_unknown_tasks_and_pods(cluster: dict[str, Any]) -> None:
    bad_task = run_cli("replay", "vkec2.pods.explode", "--uid", cluster["uid"], config=cluster["config"])
    assert bad_task.returncode == 1 and "unknown task 'vkec2.pods.explode'" in bad_task.stderr
    bad_uid = run_cli("replay", "vkec2.pods.create", "--uid", "no-such-uid", config=cluster["config"])
    assert bad_uid.returncode == 1 and "no pod with uid no-such-uid" in bad_uid.stderr


@pytest.mark.parametrize("command", ["status", "pods", "replay"])
def test_commands_say_when_redis_is_down(tmp_path: Path, command: str) -> None:
    port = free_port()
    config = tmp_path / "down.yaml"
    config.write_text(yaml.safe_dump({"cluster_name": "down", "redis_url": f"redis://127.0.0.1:{port}/0"}))
    args = [command] + (["vkec2.pods.create", "--uid", "u"] if command == "replay" else [])
    result = run_cli(*args, config=config)
    assert result.returncode == 1
    assert f"cannot reach Redis at 127.0.0.1:{port}/0" in result.stderr
    assert "Traceback" not in result.stderr


def test_instances_says_when_the_ec2_endpoint_is_down(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    config = tmp_path / "noec2.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cluster_name": "x",
                "redis_url": redis_url,
                "aws": {"endpoint_url": f"http://127.0.0.1:{port}", "max_attempts": 1},
            }
        )
    )
    result = run_cli("instances", config=config)
    assert result.returncode == 1
    assert f"cannot list instances from http://127.0.0.1:{port}" in result.stderr


def test_a_bad_config_file_is_reported_not_raised(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("agent:\n  port: not-a-port\n")
    result = run_cli("status", config=config)
    assert result.returncode == 1 and "agent.port" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(("grace", "expected"), [(0, "mark"), (3600, "keep (grace)")])
def test_gc_dry_run_reports_orphans_and_changes_nothing(
    cluster: dict[str, Any], moto_url: str, grace: int, expected: str
) -> None:
    config = cluster["config"]
    raw = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**raw, "gc": {"grace_seconds": grace}}))
    ec2 = boto3.client("ec2", endpoint_url=moto_url, region_name="us-west-2")
    orphan = ec2.run_instances(
        ImageId=TEST_AMI,
        InstanceType="m5.large",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [
                    {"Key": TAG_CLUSTER, "Value": cluster["name"]},
                    {"Key": TAG_POD_UID, "Value": "gone-pod"},
                ],
            }
        ],
    )["Instances"][0]["InstanceId"]
    result = run_cli("gc", "--dry-run", "-o", "json", config=config)
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)  # the pod's own instance is not an orphan
    assert row["instance"] == orphan and row["pod_uid"] == "gone-pod" and row["next_pass"] == expected
    assert not cluster["store"].redis.exists(cluster["store"].keys.gc_sightings())
    state = ec2.describe_instances(InstanceIds=[orphan])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "running"


def test_gc_dry_run_says_when_redis_is_down(tmp_path: Path, moto_url: str) -> None:
    port = free_port()
    config = tmp_path / "down.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cluster_name": "down",
                "redis_url": f"redis://127.0.0.1:{port}/0",
                "aws": {"endpoint_url": moto_url, "max_attempts": 1},
            }
        )
    )
    result = run_cli("gc", "--dry-run", config=config)
    assert result.returncode == 1
    assert f"cannot reach Redis at 127.0.0.1:{port}/0" in result.stderr and "Traceback" not in result.stderr


def test_pods_shows_the_health_sweeps_view_not_healthy_for_every_running_pod(cluster: dict[str, Any]) -> None:
    from vkec2.domain.health import HealthState

    sick = HealthState(failures=3, last_ok=False, unhealthy=True, checks=3, last_result="failed")
    with cluster["store"].locked(cluster["uid"]) as lock:
        lock.write({"health": sick.to_dict()})
    [pod] = json.loads(run_cli("pods", "-o", "json", config=cluster["config"]).stdout)
    assert pod["health"] == "Unhealthy"
