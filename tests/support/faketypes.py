"""DescribeInstanceTypes for the in-memory EC2 fake: a few real instance types and their facts.

:class:`FakeInstanceTypes` is mixed into :class:`tests.support.fakes.FakeEc2`: it answers
``describe_instance_types`` from :data:`TYPES` (vCPUs, memory and architectures as AWS and moto give
them), fails the whole call with ``InvalidInstanceType`` when a type is not in the table (as EC2 does),
and logs every call through the fake's ``_call``, so unit tests can count them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vkec2.errors import Ec2Error

#: name -> (vCPUs, memory MiB, architectures), as DescribeInstanceTypes gives them.
TYPES: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "t3.micro": (2, 1024, ("x86_64",)),
    "c6i.large": (2, 4096, ("x86_64",)),
    "m5.large": (2, 8192, ("i386", "x86_64")),
    "m6g.large": (2, 8192, ("arm64",)),
    "c6i.xlarge": (4, 8192, ("x86_64",)),
    "m5.xlarge": (4, 16384, ("x86_64",)),
    "c6i.2xlarge": (8, 16384, ("x86_64",)),
    "m5.2xlarge": (8, 32768, ("x86_64",)),
    "mac2.metal": (8, 16384, ("arm64_mac",)),
    "mac1.metal": (12, 32768, ("x86_64_mac",)),
    "m5.4xlarge": (16, 65536, ("x86_64",)),
}


def description(name: str) -> dict[str, Any]:
    """The ``InstanceTypes[]`` entry of ``name``."""
    vcpus, memory, arches = TYPES[name]
    return {
        "InstanceType": name,
        "VCpuInfo": {"DefaultVCpus": vcpus},
        "MemoryInfo": {"SizeInMiB": memory},
        "ProcessorInfo": {"SupportedArchitectures": list(arches)},
    }


class FakeInstanceTypes:
    """The ``describe_instance_types`` call of the Ec2 port, from :data:`TYPES`."""

    def _call(self, action: str, **args: Any) -> None:  # the fake's own call log (FakeEc2._call)
        raise NotImplementedError

    def describe_instance_types(self, instance_types: Sequence[str]) -> dict[str, dict[str, Any]]:
        wanted = sorted(set(instance_types))
        self._call("DescribeInstanceTypes", InstanceTypes=wanted)
        unknown = [name for name in wanted if name not in TYPES]
        if unknown:
            message = f"The following supplied instance types do not exist: [{', '.join(unknown)}]"
            raise Ec2Error(
                f"DescribeInstanceTypes: InvalidInstanceType: {message}", code="InvalidInstanceType"
            )
        return {name: description(name) for name in wanted}
