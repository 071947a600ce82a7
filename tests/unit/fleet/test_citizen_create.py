"""The create step of a good Kubernetes citizen: DaemonSet pods refused, images choosing the AMI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.unit.fleet.world import IMAGE, World, pod
from vkec2.contract import DAEMONSET_POD_REFUSED, IMAGE_MAPPED, UNMAPPED_IMAGE
from vkec2.domain.models import Phase

MAC_AMI = "ami-0aaaaaaaaaaaaaaa1"
UBUNTU_AMI = "ami-0bbbbbbbbbbbbbbb2"
TABLE = [{"name": "macos-14-xcode-15", "ami": MAC_AMI}, {"prefix": "ubuntu-22.04", "ami": UBUNTU_AMI}]


def imaged(image: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    spec = pod(annotations=annotations)
    spec["spec"]["containers"][0]["image"] = image
    return spec


def images_world(make_world: Callable[..., World], **citizen: Any) -> World:
    return make_world(kubernetes={"images": TABLE, **citizen})


def launched_amis(world: World) -> list[str]:
    return [call["ImageId"] for call in world.ec2.calls_of("RunInstances")]


def test_a_daemonset_pod_is_failed_with_a_warning_and_nothing_launched(world: World) -> None:
    spec = pod()
    spec["metadata"]["ownerReferences"] = [{"kind": "DaemonSet", "name": "node-exporter", "uid": "x"}]
    world.seed(spec=spec)
    assert world.step() is None
    assert (world.rec.phase, world.rec.reason) == (Phase.FAILED, DAEMONSET_POD_REFUSED)
    assert "node-exporter" in world.rec.message and "daemonset_pods" in world.rec.message
    assert [(e.reason, e.event_type) for e in world.events] == [(DAEMONSET_POD_REFUSED, "Warning")]
    assert world.ec2.calls == []


def test_daemonset_pods_run_when_the_operator_says_so(make_world: Callable[..., World]) -> None:
    world = make_world(kubernetes={"daemonset_pods": "run"})
    spec = pod()
    spec["metadata"]["ownerReferences"] = [{"kind": "DaemonSet", "name": "node-exporter", "uid": "x"}]
    world.seed(spec=spec)
    world.step()
    assert world.rec.phase is Phase.PROVISIONING and launched_amis(world) == [IMAGE]


def test_a_mapped_image_launches_its_ami(make_world: Callable[..., World]) -> None:
    world = images_world(make_world)
    world.seed(spec=imaged("ubuntu-22.04-cuda:12"))
    world.step()
    assert launched_amis(world) == [UBUNTU_AMI]
    assert not any(c.get("type") == IMAGE_MAPPED for c in world.rec.conditions)


def test_an_unmapped_image_is_reported_and_runs_on_the_default_ami(make_world: Callable[..., World]) -> None:
    world = images_world(make_world)
    world.seed(spec=imaged("alpine:3.20"))
    world.step()
    assert launched_amis(world) == [IMAGE]
    assert world.rec.phase is Phase.PROVISIONING
    [warning] = [e for e in world.events if e.reason == UNMAPPED_IMAGE]
    assert warning.event_type == "Warning" and "'alpine:3.20'" in warning.message and IMAGE in warning.message
    [mapped] = [c for c in warning.conditions if c.get("type") == IMAGE_MAPPED]
    assert (mapped["status"], mapped["reason"]) == ("False", UNMAPPED_IMAGE)


def test_an_unmapped_image_is_refused_when_the_operator_says_so(make_world: Callable[..., World]) -> None:
    world = images_world(make_world, unmapped_images="refuse")
    world.seed(spec=imaged("alpine:3.20"))
    assert world.step() is None
    assert (world.rec.phase, world.rec.reason) == (Phase.FAILED, UNMAPPED_IMAGE)
    assert world.ec2.calls == []


def test_the_image_id_annotation_overrides_the_table_within_the_allowlist(
    make_world: Callable[..., World],
) -> None:
    world = images_world(make_world)
    allowed = "ami-0fedcba9876543210"  # in the test settings' allowlist
    world.seed(spec=imaged("macos-14-xcode-15", {"compute.amazonaws.com/image-id": allowed}))
    world.step()
    assert launched_amis(world) == [allowed]

    refused = images_world(make_world)
    refused.seed(spec=imaged("macos-14-xcode-15", {"compute.amazonaws.com/image-id": "ami-0999999999999999"}))
    assert refused.step() is None
    assert (refused.rec.phase, refused.rec.reason) == (Phase.FAILED, "AnnotationNotAllowed")
    assert refused.ec2.calls == []
