"""The scale-down decision: drain only when this pod's ordinal is at or above ``spec.replicas``.

Every case that leaves the answer in doubt (no StatefulSet, no pod name or namespace, an API error,
a name without an ordinal, no replicas, a StatefulSet being deleted) must come out as "no drain".
"""

from __future__ import annotations

from typing import Any, cast

import pytest

from producer.kube import Kube, KubeError, Obj
from producer.options import parse_args
from producer.scaledown import check, decide, statefulset_pod


def sts(replicas: Any, **meta: Any) -> Obj:
    return {"metadata": {"name": "vk-producer", **meta}, "spec": {"replicas": replicas}}


@pytest.mark.parametrize(
    ("pod", "name", "ordinal"),
    [("vk-producer-0", "vk-producer", 0), ("a-12", "a", 12), ("x.y-3", "x.y", 3)],
)
def test_statefulset_pod_splits_name_and_ordinal(pod: str, name: str, ordinal: int) -> None:
    assert statefulset_pod(pod) == (name, ordinal)


@pytest.mark.parametrize("pod", ["vk-producer", "vk-producer-", "-1", "vk-producer-01", "vk-producer-x"])
def test_statefulset_pod_refuses_other_names(pod: str) -> None:
    assert statefulset_pod(pod) is None


@pytest.mark.parametrize(
    ("pod", "replicas", "drain"),
    [
        ("vk-producer-1", 1, True),  # 2 -> 1: the last ordinal goes
        ("vk-producer-2", 1, True),
        ("vk-producer-0", 0, True),  # scaled to zero
        ("vk-producer-1", 2, False),  # a restart
        ("vk-producer-0", 1, False),
    ],
)
def test_decide_compares_the_ordinal_with_the_replicas(pod: str, replicas: int, drain: bool) -> None:
    verdict = decide(pod, sts(replicas))
    assert verdict.drain is drain
    assert str(replicas) in verdict.reason


@pytest.mark.parametrize(
    ("pod", "statefulset", "why"),
    [
        ("vk-producer-1", None, "not found"),
        ("vk-producer", sts(0), "not <statefulset>-<ordinal>"),
        ("vk-producer-1", sts(None), "no valid spec.replicas"),
        ("vk-producer-1", sts("0"), "no valid spec.replicas"),
        ("vk-producer-1", sts(True), "no valid spec.replicas"),
        ("vk-producer-1", sts(0, deletionTimestamp="2025-01-01T00:00:00Z"), "being deleted"),
    ],
)
def test_decide_never_drains_in_doubt(pod: str, statefulset: Obj | None, why: str) -> None:
    verdict = decide(pod, statefulset)
    assert not verdict.drain and why in verdict.reason


class FakeKube:
    def __init__(self, answer: Obj | KubeError | None) -> None:
        self.answer = answer
        self.asked: list[tuple[str, str]] = []

    def get_statefulset(self, namespace: str, name: str) -> Obj | None:
        self.asked.append((namespace, name))
        if isinstance(self.answer, KubeError):
            raise self.answer
        return self.answer


ENV = {"POD_NAME": "vk-producer-1", "POD_NAMESPACE": "vkec2-system"}


def test_check_reads_the_statefulset_of_this_pod() -> None:
    kube = FakeKube(sts(1))
    assert check(cast(Kube, kube), ENV).drain
    assert kube.asked == [("vkec2-system", "vk-producer")]


@pytest.mark.parametrize(
    ("env", "answer", "why"),
    [
        ({"POD_NAME": "vk-producer-1"}, sts(1), "POD_NAMESPACE"),
        ({"POD_NAMESPACE": "vkec2-system"}, sts(1), "POD_NAME"),
        (ENV, KubeError(403, "Forbidden", "no"), "cannot read StatefulSet vkec2-system/vk-producer: 403"),
        (ENV, KubeError(0, "MaxRetryError", "refused"), "cannot read"),
        (ENV, None, "not found"),
    ],
)
def test_check_does_not_drain_without_an_answer(env: dict[str, str], answer: Any, why: str) -> None:
    verdict = check(cast(Kube, FakeKube(answer)), env)
    assert not verdict.drain and why in verdict.reason


def test_drain_timeout_option() -> None:
    quiet = ["--no-kubelet"]  # Kubernetes mode's kubelet API would need an authentication method
    assert parse_args(quiet).drain_timeout == 540.0
    assert parse_args([*quiet, "--drain-timeout", "30"]).drain_timeout == 30.0
    with pytest.raises(SystemExit):
        parse_args([*quiet, "--drain-timeout", "0"])
