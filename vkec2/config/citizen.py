"""How the virtual node behaves as a Kubernetes citizen (``kubernetes`` in the settings).

:class:`KubernetesSettings` holds the node's architecture label (stated, or derived from the
instance types the node launches by :func:`arch_of`), the operator's extra node labels and the
node's taints (default ``virtual-kubelet.io/provider=vkec2:NoSchedule``), what happens to
DaemonSet pods bound to the node (``daemonset_pods``: refused by default, one EC2 instance per
node is never what a DaemonSet meant), whether the producer warns about pods that will be evicted
after the node has been NotReady for their ``tolerationSeconds`` (``eviction_warning``), and the
container image → AMI table (``images``, exact names before prefixes, the longest prefix winning)
with what an image without a mapping does (``unmapped_images``). Label keys and values and taint
effects are checked with Kubernetes' own rules, so a bad value is refused at load time with its
key path, not by the API server when the node registers.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from vkec2.config.shapes import Section, check_image
from vkec2.contract import CLUSTER_LABEL, LABEL_ARCH, LABEL_INSTANCE_TYPE

#: A label (or taint) key: an optional DNS-subdomain prefix and "/", then a name of at most 63
#: characters (alphanumerics, "-", "_", "." inside).
_NAME_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_PREFIX_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
#: A label value: empty, or at most 63 characters of the name alphabet.
_VALUE_RE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
ARCHES = ("amd64", "arm64")
#: Labels the producer sets itself; an extra label may not replace them.
MANAGED_LABELS = frozenset(
    {"kubernetes.io/hostname", "kubernetes.io/os", LABEL_ARCH, LABEL_INSTANCE_TYPE, CLUSTER_LABEL}
)
#: Graviton families (a "g" after the generation: m6g, c7gn, r6gd, im4gn, is4gen) and a1.
_GRAVITON_RE = re.compile(r"(a1|[a-z]+[0-9]+g[a-z0-9-]*)")


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid Kubernetes label or taint key, or None."""
    prefix, _, name = key.rpartition("/")
    if "/" in prefix or (prefix and (len(prefix) > 253 or not _PREFIX_RE.fullmatch(prefix))):
        return f"{key!r} has an invalid prefix (a DNS subdomain before one '/')"
    if not _NAME_RE.fullmatch(name):
        return f"{key!r} is not a label key (at most 63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends)"
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a valid Kubernetes label value, or None."""
    if not _VALUE_RE.fullmatch(value):
        return f"{value!r} is not a label value (at most 63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends)"
    return None


def arch_of(instance_type: str) -> str:
    """``arm64`` for Graviton and Apple-silicon Mac (``mac2*``, ``mac-m*``) types, else ``amd64``."""
    family = instance_type.split(".", 1)[0]
    if family.startswith("mac"):
        return "amd64" if family == "mac1" else "arm64"
    return "arm64" if _GRAVITON_RE.fullmatch(family) else "amd64"


class NodeTaint(Section):
    """One node taint: ``key``, optional ``value``, ``effect`` (NoSchedule, PreferNoSchedule, NoExecute)."""

    key: str
    value: str = ""
    effect: str = "NoSchedule"

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        problem = label_key_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("value")
    @classmethod
    def _value(cls, value: str) -> str:
        problem = label_value_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("effect")
    @classmethod
    def _effect(cls, value: str) -> str:
        if value not in TAINT_EFFECTS:
            raise ValueError(f"{value!r} is not a taint effect (one of {', '.join(TAINT_EFFECTS)})")
        return value

    def as_dict(self) -> dict[str, str]:
        out = {"key": self.key, "effect": self.effect}
        if self.value:
            out["value"] = self.value
        return out


class ImageMapping(Section):
    """One row of the image table: an exact image ``name`` or a ``prefix``, and the AMI it launches."""

    name: str | None = None
    prefix: str | None = None
    ami: str

    _ami = field_validator("ami")(check_image)

    @model_validator(mode="after")
    def _one(self) -> ImageMapping:
        if (self.name is None) == (self.prefix is None):
            raise ValueError("give exactly one of name (an exact image) or prefix")
        if not (self.name or self.prefix):
            raise ValueError("the image name or prefix is empty")
        return self


def _default_taints() -> list[NodeTaint]:
    return [NodeTaint(key="virtual-kubelet.io/provider", value="vkec2", effect="NoSchedule")]


class KubernetesSettings(Section):
    """The node's labels, taints and architecture; DaemonSet pods; images → AMIs (docs/configuration.md)."""

    arch: Literal["amd64", "arm64"] | None = Field(
        default=None,
        description="The node's kubernetes.io/arch; unset: from the instance types the node launches.",
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Extra node labels.")
    taints: list[NodeTaint] = Field(default_factory=_default_taints, description="The node's taints.")
    daemonset_pods: Literal["refuse", "run"] = Field(
        default="refuse", description="refuse: DaemonSet pods fail (DaemonSetPodRefused); run: launched."
    )
    eviction_warning: bool = Field(
        default=True,
        description="Warn (event) about pods that NotReady will evict after a finite tolerationSeconds.",
    )
    images: list[ImageMapping] = Field(default_factory=list, description="Container image -> AMI.")
    unmapped_images: Literal["report", "refuse"] = Field(
        default="report", description="An image the table does not map: report (default AMI) or refuse."
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            problem = label_key_problem(key) or label_value_problem(item)
            if problem:
                raise ValueError(f"label {key}: {problem}")
            if key in MANAGED_LABELS:
                raise ValueError(f"label {key} is set by vkec2 itself ({', '.join(sorted(MANAGED_LABELS))})")
        return value

    @field_validator("taints")
    @classmethod
    def _taints(cls, value: list[NodeTaint]) -> list[NodeTaint]:
        seen = [(t.key, t.effect) for t in value]
        if len(set(seen)) != len(seen):
            raise ValueError("a taint key is listed twice with the same effect")
        return value

    @field_validator("images")
    @classmethod
    def _images(cls, value: list[ImageMapping]) -> list[ImageMapping]:
        keys = [(m.name, m.prefix) for m in value]
        if len(set(keys)) != len(keys):
            raise ValueError("an image name or prefix is listed twice")
        return value
