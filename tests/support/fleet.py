"""A real worker fleet for end-to-end tests: Celery workers as subprocesses on a private Redis.

:class:`FleetHarness` writes a configuration file for a unique cluster, starts ``celery -A tasks
worker`` processes with it (killable by PID to test crash safety), submits pods the way the
producer does (desired spec in Redis, then ``vkec2.pods.create`` on the broker) and waits on the
store for phases. EC2 assertions go with boto3 to ``observe_url`` (default: the fleet's endpoint); a
fleet behind the AWS-like double (:func:`fleet_behind`) observes moto itself, so the test's own
checks see neither lag nor throttling and are not counted at the endpoint.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import boto3
import yaml
from celery import Celery

from tests.support.awslike import AWS_LIKE, AwsLike
from tests.support.ec2proxy import Ec2Proxy
from tests.support.services import ManagedProcess, wait_until
from vkec2.broker.app import make_app, worker_argv
from vkec2.config import Settings
from vkec2.contract import TAG_CLUSTER, TAG_POD_UID
from vkec2.domain.models import Phase, PodRecord
from vkec2.domain.podspec import LaunchParams
from vkec2.store.redis_store import Store

NODE = "vkec2-test-node"
TEST_AMI = "ami-12c6146b"


def launch_params(instance_type: str = "m5.large", tags: Mapping[str, str] | None = None) -> LaunchParams:
    """Plain launch parameters on moto's test AMI, for tests that call the EC2 gateway directly."""
    return LaunchParams(
        image_id=TEST_AMI,
        instance_type=instance_type,
        subnet_id=None,
        security_groups=(),
        instance_profile=None,
        key_pair=None,
        user_data=None,
        tags=tuple(sorted((tags or {}).items())),
        warm_pool=None,
    )


def bare_pod(uid: str, name: str = "p") -> dict[str, object]:
    """The least a pod record needs: its UID, name and namespace (for store-level tests)."""
    return {"metadata": {"uid": uid, "name": name, "namespace": "ns"}, "spec": {"containers": []}}


def example_pod(
    name: str,
    *,
    uid: str | None = None,
    namespace: str = "default",
    annotations: Mapping[str, str] | None = None,
    restart_policy: str = "Always",
    node: str = NODE,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or str(uuid.uuid4()),
            "annotations": dict(annotations or {}),
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "sim", "command": ["sleep", "3600"]}],
        },
    }


class FleetHarness:
    """One cluster's fleet under test."""

    def __init__(
        self,
        tmp: Path,
        redis_url: str,
        moto_url: str,
        agent_endpoint: str,
        overrides: Mapping[str, Any] | None = None,
        *,
        observe_url: str | None = None,
    ) -> None:
        self.cluster = f"t-{uuid.uuid4().hex[:10]}"
        raw: dict[str, Any] = {
            "cluster_name": self.cluster,
            "redis_url": redis_url,
            # One EC2 call at worst (3 x (1 + 4) s + 5 s of rate-limit wait) fits in the pod lock.
            "aws": {
                "endpoint_url": moto_url,
                "max_attempts": 3,
                "connect_timeout_seconds": 1,
                "read_timeout_seconds": 4,
                # One RunInstances per pod, so each test sees its own pod's launch; the batched path
                # is exercised where a test asks for it (test_batch_launch*.py, test_aws_like_e2e.py).
                "launch_batch_window_seconds": 0,
            },
            "rate_limits": {"max_wait_seconds": 5},
            "ec2": {"image_id": TEST_AMI, "instance_type": "m5.large"},
            "agent": {
                "endpoint": f"static:{agent_endpoint}",
                "call_timeout_seconds": 5,
                "boot_timeout_seconds": 60,
            },
            "celery": {"visibility_timeout_seconds": 10, "max_countdown_seconds": 2},
        }
        for key, value in (overrides or {}).items():
            if isinstance(value, dict) and isinstance(raw.get(key), dict):
                raw[key] = {**raw[key], **value}
            else:
                raw[key] = value
        self.settings = Settings.model_validate(raw)
        self.config_path = tmp / f"{self.cluster}.yaml"
        self.config_path.write_text(yaml.safe_dump(raw))
        self.moto_url = moto_url
        self.store = Store.from_settings(self.settings)
        # The harness stands for node NODE's producer, whose first full pod list records this.
        self.store.mark_reconciled(NODE, self.store.ensure_epoch())
        self.app: Celery = make_app(self.settings)
        self.ec2 = boto3.client("ec2", endpoint_url=observe_url or moto_url, region_name=self.settings.region)
        self.workers: list[ManagedProcess] = []

    # -- processes ------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VKEC2_")}
        env["VKEC2_CONFIG"] = str(self.config_path)
        return env

    def start_worker(self, concurrency: int = 4, queues: str = "pods,health,maintenance") -> ManagedProcess:
        name = f"w{len(self.workers)}-{self.cluster}@localhost"
        proc = ManagedProcess(
            "worker",
            worker_argv(name, concurrency=concurrency, queues=queues.split(",")),
            env=self.env(),
        ).start()
        self.workers.append(proc)

        def ready() -> bool:
            if not proc.alive():
                raise RuntimeError(f"worker exited:\n{proc.output()[-3000:]}")
            return "ready." in proc.output()

        wait_until(ready, 60, "the Celery worker to be ready", interval=0.2)
        return proc

    def producer_argv(self, node: str, *flags: str) -> list[str]:
        """The command line of ``vkec2 producer`` for node ``node`` of this fleet, with ``flags``."""
        return [
            sys.executable,
            "-m",
            "vkec2.cli",
            "producer",
            "--config",
            str(self.config_path),
            "--node-name",
            node,
            *flags,
        ]

    def start_beat(self) -> ManagedProcess:
        """A ``celery beat`` with RedBeat (stopped with the workers); returns once it has started."""
        proc = ManagedProcess(
            "beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tasks",
                "beat",
                "-l",
                "DEBUG",
                "--schedule",
                str(self.config_path.with_suffix(f".beat{len(self.workers)}")),
            ],
            env=self.env(),
        ).start()
        self.workers.append(proc)
        wait_until(lambda: "beat: Starting" in proc.output() or not proc.alive(), 60, "celery beat to start")
        if not proc.alive():
            raise RuntimeError(f"beat exited:\n{proc.output()[-3000:]}")
        return proc

    def stop(self) -> None:
        for proc in self.workers:
            proc.stop()
        self.app.close()
        self.store.redis.close()

    # -- driving pods like the producer -----------------------------------------------------

    def submit(self, pod: Mapping[str, Any]) -> str:
        uid = str(pod["metadata"]["uid"])
        generation = self.store.put_desired(pod, NODE)
        self.send("vkec2.pods.create", uid=uid, generation=generation)
        return uid

    def delete(self, uid: str) -> None:
        generation = self.store.mark_deleted(uid)
        self.send("vkec2.pods.delete", uid=uid, generation=generation)

    def send(self, name: str, **kwargs: Any) -> None:
        self.app.send_task(name, kwargs=kwargs)

    # -- observing ---------------------------------------------------------------------------

    def record(self, uid: str) -> PodRecord:
        rec = self.store.get(uid)
        assert rec is not None, f"no record for {uid}"
        return rec

    def wait_phase(self, uids: Iterable[str], phases: Iterable[Phase], timeout: float = 120) -> None:
        wanted = set(phases)
        pending = set(uids)

        def done() -> bool:
            for uid in list(pending):
                rec = self.store.get(uid)
                if rec is not None and rec.phase in wanted:
                    pending.discard(uid)
            return not pending

        try:
            wait_until(done, timeout, f"{len(pending)} pods to reach {sorted(wanted)}", interval=0.2)
        except TimeoutError:
            sample = {
                uid: (r.phase.value, r.reason, r.message)
                for uid in list(pending)[:5]
                if (r := self.store.get(uid)) is not None
            }
            logs = "\n".join(w.output()[-2000:] for w in self.workers)
            raise AssertionError(
                f"pods not in {sorted(wanted)}: {json.dumps(sample, indent=1)}\n{logs}"
            ) from None

    def instances(self, states: Iterable[str] = ("pending", "running")) -> list[dict[str, Any]]:
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[
                {"Name": f"tag:{TAG_CLUSTER}", "Values": [self.cluster]},
                {"Name": "instance-state-name", "Values": list(states)},
            ]
        )
        return [dict(i) for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def instances_by_uid(self, states: Iterable[str] = ("pending", "running")) -> dict[str, list[str]]:
        """The cluster's instances by the pod that owns them: its pod-UID tag or, for a batch-launched
        instance whose pod tags are not written yet, the pod the fleet holds them for (as the orphan
        GC reads it); "" for an instance nobody owns."""
        pending = {iid: entry.uid for iid, entry in self.store.pending_pod_tags().items()}
        out: dict[str, list[str]] = {}
        for inst in self.instances(states):
            tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
            owner = tags.get(TAG_POD_UID) or pending.get(inst["InstanceId"], "")
            out.setdefault(owner, []).append(inst["InstanceId"])
        return out


def fleet_behind(
    proxy: Ec2Proxy,
    tmp: Path,
    redis_url: str,
    agent_endpoint: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    aws_like: AwsLike | bool = False,
) -> FleetHarness:
    """A fleet whose EC2 endpoint is ``proxy``; with ``aws_like`` (True: :data:`AWS_LIKE`) the proxy
    behaves like AWS from now on and the harness observes moto directly."""
    if aws_like is False:
        return FleetHarness(tmp, redis_url, proxy.url, agent_endpoint, overrides)
    proxy.configure(AWS_LIKE if aws_like is True else aws_like)
    return FleetHarness(tmp, redis_url, proxy.url, agent_endpoint, overrides, observe_url=proxy.upstream)


def deadline(seconds: float) -> float:
    return time.monotonic() + seconds
