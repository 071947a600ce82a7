"""End to end: the chosen instance type and zone are reported on the pod, through the AWS-like double.

A real producer against the Kubernetes API double, real workers, and EC2 behind the double with its
realistic preset (visibility lag, slow pending, AWS's request buckets). Two pods: one whose
nodeSelector names ``c6i.large`` and a zone (and the node's own ``kubernetes.io/os``, which must not
get in the way), one that asks for 6 CPU and 20Gi and names no type. Each ends Running with the
annotations ``vkec2.io/instance-type`` and ``vkec2.io/zone`` naming what EC2 launched (checked
against moto's DescribeInstances), an Event whose message says "… (c6i.large in us-west-2b)" and
the message of its ``vkec2.io/InstanceReady`` condition "c6i.large in us-west-2b".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3

from tests.fleet.test_aws_like_e2e import default_subnets
from tests.k8s.apiserver import FakeKubeApiServer
from tests.producer.conftest import StartProducer, pod_manifest
from tests.support.fleet import FleetHarness
from vkec2.contract import INSTANCE_ID_ANNOTATION, INSTANCE_READY, INSTANCE_TYPE_ANNOTATION, ZONE_ANNOTATION

Make = Callable[..., FleetHarness]
NODE = "vk-choice-0"
CHOICES = ["m5.large", "m5.2xlarge", "c6i.2xlarge", "m5.4xlarge"]


def _annotated(api: FakeKubeApiServer, name: str) -> bool:
    pod = api.get("pods", name, "default") or {}
    annotations = pod.get("metadata", {}).get("annotations") or {}
    running = (pod.get("status") or {}).get("phase") == "Running"
    return running and ZONE_ANNOTATION in annotations and INSTANCE_TYPE_ANNOTATION in annotations


def test_the_chosen_type_and_zone_are_annotated_on_the_pod_and_named_in_its_events(
    make_fleet: Make, apiserver: FakeKubeApiServer, start_producer: StartProducer, moto_url: str
) -> None:
    first, second = default_subnets(moto_url)
    moto = boto3.client("ec2", endpoint_url=moto_url, region_name="us-west-2")
    zone_b = moto.describe_subnets(SubnetIds=[second])["Subnets"][0]["AvailabilityZone"]
    fleet = make_fleet(
        aws_like=True,
        ec2={"subnets": [first, second], "instance_type_choices": CHOICES},
        allowlists={"default": {"instance_types": ["c6i.large"]}},
    )
    fleet.start_worker(concurrency=2)
    start_producer(fleet, NODE)
    named: dict[str, Any] = pod_manifest("named", NODE)
    named["spec"]["nodeSelector"] = {
        "node.kubernetes.io/instance-type": "c6i.large",
        "topology.kubernetes.io/zone": zone_b,
        "kubernetes.io/os": "linux",
    }
    sized: dict[str, Any] = pod_manifest("sized", NODE)
    sized["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "6", "memory": "20Gi"}}
    for manifest in (named, sized):
        apiserver.create("pods", manifest)

    apiserver.wait_for(
        lambda a: _annotated(a, "named") and _annotated(a, "sized"), 180, "both pods annotated"
    )
    expected = {"named": ("c6i.large", zone_b), "sized": ("m5.2xlarge", None)}
    for name, (kind, wanted_zone) in expected.items():
        pod = apiserver.get("pods", name, "default")
        assert pod is not None
        annotations = pod["metadata"]["annotations"]
        instance_id = annotations[INSTANCE_ID_ANNOTATION]
        described = moto.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        zone = described["Placement"]["AvailabilityZone"]
        assert (described["InstanceType"], annotations[INSTANCE_TYPE_ANNOTATION]) == (kind, kind)
        assert annotations[ZONE_ANNOTATION] == zone == (wanted_zone or zone)
        messages = [
            e["message"]
            for e in apiserver.list_objects("events")
            if e["involvedObject"].get("uid") == pod["metadata"]["uid"]
        ]
        assert any(f"({kind} in {zone})" in m for m in messages), messages
        ready = next(c for c in pod["status"]["conditions"] if c["type"] == INSTANCE_READY)
        assert (ready["status"], ready["message"]) == ("True", f"{kind} in {zone}")
