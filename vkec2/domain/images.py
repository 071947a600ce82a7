"""Container images choose the machine: the image table (``kubernetes.images``) maps images to AMIs.

:func:`image_ami` reads every container's ``image`` and looks it up: a row with ``name`` matches
the whole image reference, or the reference without its tag or digest (``macos-14-xcode-15`` matches
``macos-14-xcode-15:latest``); a row with ``prefix`` matches references starting with it. An exact
row beats any prefix, and the longest prefix wins. Containers whose images map to different AMIs
cannot share one instance: :class:`~vkec2.errors.InvalidPodSpec` (``ConflictingImages``). Images
the table does not map (when it has rows at all) are named in :attr:`ImageChoice.unmapped`: the
pod runs on the default AMI and is told so (:mod:`vkec2.domain.podspec`), or, with
``kubernetes.unmapped_images: refuse``, fails with ``UnmappedImage``. The
``compute.amazonaws.com/image-id`` annotation overrides the table (the caller does not ask).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vkec2.config.citizen import ImageMapping
from vkec2.contract import UNMAPPED_IMAGE
from vkec2.errors import InvalidPodSpec

CONFLICTING_IMAGES = "ConflictingImages"


@dataclass(frozen=True)
class ImageChoice:
    """The AMI the pod's images map to (None: no mapping), and the images without a row."""

    ami: str | None = None
    unmapped: tuple[str, ...] = ()

    def note(self) -> str:
        """The message naming the unmapped images (empty when all are mapped)."""
        if not self.unmapped:
            return ""
        return f"no AMI in kubernetes.images for image {', '.join(repr(i) for i in self.unmapped)}"


def _untagged(image: str) -> str:
    base = image.split("@", 1)[0]
    slash = base.rfind("/")
    colon = base.rfind(":")
    return base[:colon] if colon > slash else base


def lookup(table: Sequence[ImageMapping], image: str) -> str | None:
    """The AMI of ``image``: an exact row first, else the longest matching prefix; None without one."""
    bare = _untagged(image)
    for row in table:
        if row.name is not None and row.name in (image, bare):
            return row.ami
    best: ImageMapping | None = None
    for row in table:
        longer = best is None or len(row.prefix or "") > len(best.prefix or "")
        if row.prefix is not None and image.startswith(row.prefix) and longer:
            best = row
    return best.ami if best is not None else None


def pod_images(pod: Mapping[str, Any]) -> list[str]:
    """The ``image`` of each container (init containers too), in order, without repeats."""
    spec = pod.get("spec") if isinstance(pod, Mapping) else None
    spec = spec if isinstance(spec, Mapping) else {}
    images: list[str] = []
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or ():
            image = container.get("image") if isinstance(container, Mapping) else None
            if isinstance(image, str) and image.strip():
                images.append(image.strip())
    return list(dict.fromkeys(images))


def image_ami(table: Sequence[ImageMapping], pod: Mapping[str, Any], refuse_unmapped: bool) -> ImageChoice:
    """The pod's images looked up in ``table``; raises InvalidPodSpec for conflicting AMIs, and for
    unmapped images when ``refuse_unmapped``."""
    if not table:
        return ImageChoice()
    amis: dict[str, str] = {}
    unmapped: list[str] = []
    for image in pod_images(pod):
        ami = lookup(table, image)
        if ami is None:
            unmapped.append(image)
        else:
            amis[image] = ami
    if len(set(amis.values())) > 1:
        shown = ", ".join(f"{image} -> {ami}" for image, ami in amis.items())
        raise InvalidPodSpec(
            f"the pod's containers need different AMIs ({shown}); one pod runs on one instance",
            reason=CONFLICTING_IMAGES,
        )
    choice = ImageChoice(next(iter(amis.values()), None), tuple(unmapped))
    if unmapped and refuse_unmapped:
        raise InvalidPodSpec(f"{choice.note()} (kubernetes.unmapped_images: refuse)", reason=UNMAPPED_IMAGE)
    return choice
