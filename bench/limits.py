"""The limits the fleet's throughput is compared with: this machine's, and the EC2 buckets'.

:func:`serial_baseline` makes only the calls a pod needs, with nothing of the fleet around them
(no Redis, no Celery, no locks): one RunInstances, DescribeInstances until running, the agent's
health check until it serves, LaunchApplication, the application status until Running. Each pod's
calls run one after the other; ``threads`` pods run at once (the fleet's total worker threads),
against the same endpoint and simulator as the fleet, so pods per second is what this machine
allows that work. :func:`refill_limited_seconds` is the least time AWS's RunInstances buckets allow
to launch a number of instances (the limit under buckets). Plumbing for one benchmark.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import boto3

from tests.support import awslike
from tests.support.awslike import AwsLike, Bucket
from tests.support.fleet import TEST_AMI
from vkec2.agent_client.client import AgentClient
from vkec2.config import AgentConnection
from vkec2.domain.agents import AgentTarget


def refill_limited_seconds(n_instances: int, aws: AwsLike, batch: int = 1) -> float:
    """The least seconds AWS's RunInstances buckets in ``aws`` allow to launch ``n_instances``, ``batch``
    instances per call (1: one call per pod, no batching).

    Both buckets start full and each call is made as soon as both allow it: a call takes one request
    token and one instance token per instance. With a request bucket of burst B_r refilled r_r/s
    and an instance bucket of burst B_i refilled r_i/s this is::

        max(0, (ceil(n / batch) - B_r) / r_r, (n - B_i) / r_i)

    With AWS's buckets (5, 2/s) and (1,000, 2/s): one call per pod, 100 pods take 47.5 s (2 pods/s
    after the burst of 5); in batches of 100, 1,000 pods fit the bursts (0 s). The double's own
    ``launch_limit_seconds`` (where this build has it) computes the same step by step and is used.
    """
    exact = getattr(awslike, "launch_limit_seconds", None)
    if exact is not None:
        return float(exact(n_instances, aws, batch))
    if n_instances <= 0:
        return 0.0
    calls = math.ceil(n_instances / max(1, batch))
    requests = (aws.buckets or {}).get("RunInstances")
    instances: Bucket | None = (getattr(aws, "resource_buckets", None) or {}).get("RunInstances")
    waits = [0.0]
    if requests is not None:
        waits.append((calls - requests.size) / requests.refill)
    if instances is not None:
        waits.append((n_instances - instances.size) / instances.refill)
    return max(waits)


def limit_rate(n_pods: int, machine_rate: float, aws: AwsLike | None, batch: int = 1) -> float:
    """Pods per second the limit allows for ``n_pods``: the machine's rate, or the buckets' when slower."""
    if aws is None or not aws.buckets:
        return machine_rate
    machine_seconds = n_pods / machine_rate if machine_rate > 0 else math.inf
    return n_pods / max(machine_seconds, refill_limited_seconds(n_pods, aws, batch))


@dataclass(frozen=True)
class Baseline:
    pods: int
    done: int
    seconds: float  # wall time of the whole baseline
    per_pod: list[float]  # each pod's own time, first call to Running

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


def serial_baseline(
    endpoint_url: str, sim_endpoint: str, pods: int, threads: int, timeout: float = 120
) -> Baseline:
    """``pods`` pods through the minimal calls, ``threads`` at a time; instances terminated after."""
    ec2 = boto3.client("ec2", endpoint_url=endpoint_url, region_name="us-west-2")
    agents = AgentClient(AgentConnection(endpoint=f"static:{sim_endpoint}", call_timeout_seconds=10))
    deadline = time.monotonic() + timeout
    launched: list[str] = []

    def one(i: int) -> float | None:
        t0 = time.perf_counter()
        answer = ec2.run_instances(
            ImageId=TEST_AMI,
            InstanceType="m5.large",
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "bench", "Value": "baseline"}]}],
        )
        iid = answer["Instances"][0]["InstanceId"]
        launched.append(iid)
        while True:
            desc = ec2.describe_instances(InstanceIds=[iid])
            if desc["Reservations"][0]["Instances"][0]["State"]["Name"] == "running":
                break
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)
        target = AgentTarget(sim_endpoint, iid)
        while not agents.serving(target):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)
        pod = {
            "metadata": {"name": f"baseline-{i}", "namespace": "default", "uid": f"baseline-{i}-{iid}"},
            "spec": {"containers": [{"name": "main", "command": ["sleep", "infinity"]}]},
        }
        agents.launch(target, pod)
        while agents.status(target).phase != "Running":
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)
        return time.perf_counter() - t0

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(one, range(pods)))
    seconds = time.perf_counter() - started
    agents.close()
    for chunk in range(0, len(launched), 500):
        ec2.terminate_instances(InstanceIds=launched[chunk : chunk + 500])
    per_pod = [r for r in results if r is not None]
    return Baseline(pods, len(per_pod), seconds, per_pod)
