"""The instance choice's pure rules: selectors and affinity, quantities and requests, the pick.

Selectors are read as Kubernetes defines them (terms ORed, expressions ANDed, the six operators),
only on the honoured keys; the node's own labels and unknown keys never fail a pod; malformed input
fails it with ``InvalidNodeAffinity`` or ``InvalidResourceRequest``. Requests are summed as the
scheduler sums them. :func:`place` keeps the allowed types the selector matches, smallest first and
fitting the requests for the configured choices, and the subnets in allowed zones.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.faketypes import TYPES, description
from vkec2.config import Settings
from vkec2.contract import (
    INVALID_NODE_AFFINITY,
    INVALID_RESOURCE_REQUEST,
    LABEL_INSTANCE_TYPE,
    NO_INSTANCE_TYPE_FITS,
    NO_MATCHING_INSTANCE_TYPE,
    NO_MATCHING_ZONE,
    NODE_LABEL_KEYS,
)
from vkec2.domain.allowlist import REASON_NOT_ALLOWED
from vkec2.domain.placement import (
    Selection,
    TypeFacts,
    Universe,
    place,
    refuse_unlisted_values,
    selection,
    type_labels,
    universe,
)
from vkec2.domain.requests import Requests, parse_quantity, pod_requests
from vkec2.errors import InvalidPodSpec

FACTS = {name: TypeFacts.of(description(name)) for name in TYPES}
CHOICES = ("m5.large", "m5.2xlarge", "c6i.2xlarge", "m5.4xlarge")
SUBNETS = ("subnet-0a", "subnet-0b", "subnet-0c")
NONE = Requests()
ZONES = {"subnet-0a": "us-west-2a", "subnet-0b": "us-west-2b", "subnet-0c": "us-west-2c"}


def pod(
    node_selector: dict[str, Any] | None = None,
    terms: list[Any] | None = None,
    containers: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"containers": containers or [{"name": "main", "image": "x"}], **spec}
    if node_selector is not None:
        body["nodeSelector"] = node_selector
    if terms is not None:
        required = {"nodeSelectorTerms": terms}
        body["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    return {"metadata": {"name": "p", "uid": "u-1", "namespace": "default"}, "spec": body}


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": operator, "values": list(values)}


def container(cpu: str | None = None, memory: str | None = None, **extra: Any) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    return {"name": f"c-{cpu}-{memory}", "image": "x", "resources": {"requests": requests}, **extra}


def pick(
    sel: Selection,
    types: tuple[str, ...] = CHOICES,
    requests: Requests = NONE,
    by_requests: bool = True,
) -> tuple[tuple[str, ...], tuple[str | None, ...]]:
    chosen = place(
        sel,
        Universe(types, by_requests=by_requests),
        requests=requests,
        facts=FACTS,
        subnets=SUBNETS,
        zones=ZONES,
    )
    return chosen.instance_types, chosen.subnets


# -- quantities and requests -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("1.5", Decimal("1.5")),
        ("20Gi", Decimal(20 * 2**30)),
        ("128M", Decimal(128 * 10**6)),
        ("1e3", Decimal(1000)),
        ("+4k", Decimal(4000)),
        (".5", Decimal("0.5")),
        (3, Decimal(3)),
    ],
)
def test_kubernetes_quantities_parse_to_their_value(text: Any, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "-1", "1.2.3", "2 Gi", "2gi", "Gi", "abc", "1e99", True, None, [1]])
def test_bad_quantities_are_refused_with_a_clear_reason(text: Any) -> None:
    with pytest.raises(InvalidPodSpec) as err:
        parse_quantity(text, "container main cpu")
    assert err.value.reason == INVALID_RESOURCE_REQUEST and "container main cpu" in err.value.message


def test_requests_sum_containers_and_take_the_largest_init_container_and_sidecars() -> None:
    spec = pod(
        containers=[container("2", "4Gi"), container("500m", "1Gi")],
        initContainers=[container("4", "1Gi")],
    )
    assert pod_requests(spec) == Requests(4000, 5 * 2**30)  # cpu from the init container, memory summed
    # A sidecar (restartPolicy Always) runs beside everything after it: it adds to both.
    spec["spec"]["initContainers"] = [container("1", "1Gi", restartPolicy="Always"), container("4", "1Gi")]
    assert pod_requests(spec) == Requests(5000, 6 * 2**30)
    spec["spec"]["overhead"] = {"cpu": "250m", "memory": "128Mi"}
    assert pod_requests(spec) == Requests(5250, 6 * 2**30 + 128 * 2**20)


def test_limits_stand_for_missing_requests_and_no_resources_request_nothing() -> None:
    limited = {"name": "l", "image": "x", "resources": {"limits": {"cpu": "3", "memory": "2Gi"}}}
    assert pod_requests(pod(containers=[limited])) == Requests(3000, 2 * 2**30)
    assert pod_requests(pod()) == Requests()
    assert str(Requests(6000, 20 * 2**30)) == "cpu 6, memory 20Gi"


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "c", "resources": {"requests": {"cpu": "lots"}}},
        {"name": "c", "resources": {"requests": "2"}},
        {"name": "c", "resources": "big"},
    ],
)
def test_malformed_requests_fail_the_pod_naming_the_container(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidPodSpec) as err:
        pod_requests(pod(containers=[bad]))
    assert err.value.reason == INVALID_RESOURCE_REQUEST and "container c" in err.value.message


# -- selectors ---------------------------------------------------------------------------------


def test_no_selector_and_node_keys_constrain_nothing() -> None:
    assert selection(pod()).terms is None
    node_only = {key: "x" for key in NODE_LABEL_KEYS}
    assert selection(pod(node_selector=node_only)).terms is None
    assert selection(pod(node_selector=node_only)).ignored == ()
    # A term on the node's labels alone was satisfied by the node: the instance is free.
    assert (
        selection(pod(terms=[{"matchExpressions": [expr("kubernetes.io/os", "In", "linux")]}])).terms is None
    )


def test_the_node_labels_are_the_ones_the_producer_puts_on_the_node() -> None:
    from producer.node import NodeConfig, labels

    # kubernetes.io/arch (and the instance type) are node labels and instance choices alike.
    assert set(labels(NodeConfig(name="n", cluster="c"))) - {"kubernetes.io/arch"} == NODE_LABEL_KEYS


def test_unknown_keys_are_ignored_and_reported() -> None:
    sel = selection(
        pod(node_selector={"example.com/team": "a", "node.kubernetes.io/instance-type": "c6i.large"})
    )
    assert sel.ignored == ("example.com/team",)
    assert sel.named_types() == ("c6i.large",)


def test_node_selector_names_the_instance_type() -> None:
    sel = selection(pod(node_selector={"node.kubernetes.io/instance-type": "c6i.large"}))
    assert sel.named_types() == ("c6i.large",) and sel.source == "nodeSelector"
    assert pick(sel, types=sel.named_types(), by_requests=False) == (("c6i.large",), SUBNETS)


def test_terms_are_ored_and_expressions_anded() -> None:
    sel = selection(
        pod(
            terms=[
                {"matchExpressions": [expr("karpenter.k8s.aws/instance-family", "In", "m5")]},
                {
                    "matchExpressions": [
                        expr("karpenter.k8s.aws/instance-category", "In", "c"),
                        expr("karpenter.k8s.aws/instance-generation", "Gt", "5"),
                    ]
                },
            ]
        )
    )
    assert sel.named_types() == ()
    types, _ = pick(
        sel, types=("t3.micro", "c6i.large", "m5.large", "m6g.large", "m5.2xlarge"), by_requests=False
    )
    assert types == ("c6i.large", "m5.large", "m5.2xlarge")


@pytest.mark.parametrize(
    ("requirement", "expected"),
    [
        (expr("karpenter.k8s.aws/instance-generation", "Lt", "6"), ("m5.large", "m5.2xlarge")),
        (
            expr("node.kubernetes.io/instance-type", "NotIn", "m5.large"),
            ("c6i.large", "m6g.large", "m5.2xlarge"),
        ),
        (expr("beta.kubernetes.io/instance-type", "In", "m6g.large"), ("m6g.large",)),
        (expr("kubernetes.io/arch", "In", "arm64"), ("m6g.large",)),
        (expr("kubernetes.io/arch", "NotIn", "arm64"), ("c6i.large", "m5.large", "m5.2xlarge")),
        (expr("kubernetes.io/arch", "Exists"), ("c6i.large", "m5.large", "m6g.large", "m5.2xlarge")),
        (expr("karpenter.k8s.aws/instance-family", "DoesNotExist"), None),
    ],
)
def test_operators(requirement: dict[str, Any], expected: tuple[str, ...] | None) -> None:
    sel = selection(pod(terms=[{"matchExpressions": [requirement]}]))
    types = ("c6i.large", "m5.large", "m6g.large", "m5.2xlarge")
    if expected is None:
        with pytest.raises(InvalidPodSpec) as err:
            pick(sel, types=types, by_requests=False)
        assert err.value.reason == NO_MATCHING_INSTANCE_TYPE
        assert "instance-family DoesNotExist" in err.value.message
        return
    assert pick(sel, types=types, by_requests=False)[0] == expected


def test_type_labels_follow_karpenters_names() -> None:
    labels = type_labels("c6i.2xlarge", FACTS["c6i.2xlarge"])
    assert labels["karpenter.k8s.aws/instance-family"] == "c6i"
    assert labels["karpenter.k8s.aws/instance-category"] == "c"
    assert labels["karpenter.k8s.aws/instance-generation"] == "6"
    assert labels["kubernetes.io/arch"] == "amd64"
    assert type_labels("mac2.metal", FACTS["mac2.metal"])["kubernetes.io/arch"] == "arm64"
    assert "karpenter.k8s.aws/instance-generation" not in type_labels("u-6tb1.metal", None)


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({"nodeSelector": ["a"]}, "spec.nodeSelector"),
        ({"nodeSelector": {"a": 1}}, "spec.nodeSelector"),
        ({"affinity": "x"}, "spec.affinity"),
        ({"affinity": {"nodeAffinity": "x"}}, "spec.affinity.nodeAffinity"),
        ({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}}, "non-empty"),
        (pod(terms=["x"])["spec"], "nodeSelectorTerms[0]"),
        (pod(terms=[{"matchExpressions": {"key": "a"}}])["spec"], "must be lists"),
        (pod(terms=[{"matchExpressions": [expr("a", "Near", "b")]}])["spec"], "operator 'Near'"),
        (pod(terms=[{"matchExpressions": [expr("a", "In")]}])["spec"], "In needs at least one value"),
        (pod(terms=[{"matchExpressions": [expr("a", "Exists", "b")]}])["spec"], "Exists takes no values"),
        (
            pod(terms=[{"matchExpressions": [expr("a", "Gt", "five")]}])["spec"],
            "Gt needs exactly one integer",
        ),
        (
            pod(terms=[{"matchExpressions": [expr("a", "Lt", "1", "2")]}])["spec"],
            "Lt needs exactly one integer",
        ),
        (pod(terms=[{"matchExpressions": [{"operator": "In", "values": ["x"]}]}])["spec"], "key is missing"),
        (
            pod(terms=[{"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]}])["spec"],
            "strings",
        ),
    ],
)
def test_malformed_selectors_fail_the_pod_naming_the_problem(spec: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidPodSpec) as err:
        selection({"metadata": {}, "spec": spec})
    assert err.value.reason == INVALID_NODE_AFFINITY and where in err.value.message


def test_empty_terms_match_nothing_and_capacity_type_is_only_a_hint() -> None:
    sel = selection(pod(terms=[{}]))
    assert sel.terms == ()
    with pytest.raises(InvalidPodSpec) as err:
        pick(sel)
    assert err.value.reason == NO_MATCHING_INSTANCE_TYPE
    spot = selection(pod(node_selector={"karpenter.sh/capacity-type": "spot"}))
    chosen = place(spot, Universe(CHOICES), requests=Requests(), facts=FACTS, subnets=SUBNETS, zones=ZONES)
    assert chosen.capacity_types == ("spot",) and chosen.instance_types == CHOICES
    either = selection(pod(terms=[{"matchExpressions": [expr("karpenter.sh/capacity-type", "NotIn", "x")]}]))
    assert either.capacity_types() == ("on-demand", "spot")
    assert selection(pod()).capacity_types() == ()
    with pytest.raises(InvalidPodSpec):
        selection(pod(node_selector={"karpenter.sh/capacity-type": "reserved"})).capacity_types()


# -- the pick ----------------------------------------------------------------------------------


def test_requests_pick_the_smallest_allowed_type_that_fits() -> None:
    # c6i.2xlarge (8 vCPU, 16 GiB) lacks memory for 20Gi; m5.2xlarge (8 vCPU, 32 GiB) fits.
    types, _ = pick(selection(pod()), requests=Requests(6000, 20 * 2**30))
    assert types == ("m5.2xlarge", "m5.4xlarge")
    assert pick(selection(pod()), requests=Requests())[0] == (
        "m5.large",
        "c6i.2xlarge",
        "m5.2xlarge",
        "m5.4xlarge",
    )
    assert pick(selection(pod()), requests=Requests(6000, 8 * 2**30))[0][0] == "c6i.2xlarge"


def test_requests_larger_than_every_allowed_type_fail_the_pod() -> None:
    with pytest.raises(InvalidPodSpec) as err:
        pick(selection(pod()), requests=Requests(64000, 20 * 2**30))
    assert err.value.reason == NO_INSTANCE_TYPE_FITS
    assert "cpu 64" in err.value.message and "m5.4xlarge (16 vCPU, 65536 MiB)" in err.value.message


def test_a_zone_selector_keeps_that_zones_subnets_or_fails_the_pod() -> None:
    sel = selection(pod(node_selector={"topology.kubernetes.io/zone": "us-west-2b"}))
    assert pick(sel)[1] == ("subnet-0b",)
    legacy = selection(
        pod(
            terms=[
                {"matchExpressions": [expr("failure-domain.beta.kubernetes.io/zone", "NotIn", "us-west-2a")]}
            ]
        )
    )
    assert pick(legacy)[1] == ("subnet-0b", "subnet-0c")
    nowhere = selection(pod(node_selector={"topology.kubernetes.io/zone": "eu-west-1a"}))
    with pytest.raises(InvalidPodSpec) as err:
        pick(nowhere)
    assert err.value.reason == NO_MATCHING_ZONE and "eu-west-1a" in err.value.message
    assert "us-west-2a, us-west-2b, us-west-2c" in err.value.message


def test_universe_prefers_the_pods_own_word() -> None:
    sel = selection(pod(node_selector={"node.kubernetes.io/instance-type": "c6i.large"}))
    own = ("m5.large", "m5.xlarge")
    assert universe(own, sel, annotated=True, pooled=False, choices=CHOICES) == Universe(own)
    assert universe(own, sel, annotated=False, pooled=True, choices=CHOICES) == Universe(own)
    assert universe(own, sel, annotated=False, pooled=False, choices=CHOICES).named_by_selector
    free = selection(pod())
    assert universe(own, free, annotated=False, pooled=False, choices=CHOICES) == Universe(
        CHOICES, by_requests=True
    )
    assert universe(own, free, annotated=False, pooled=False, choices=()) == Universe(own)


def test_types_a_selector_names_are_held_to_the_allowlist() -> None:
    settings = Settings.model_validate(
        {"allowlists": {"namespaces": {"ml": {"instance_types": ["g5.xlarge"]}}}}
    )
    sel = selection(pod(node_selector={"node.kubernetes.io/instance-type": "g5.xlarge"}))
    listed = ("g5.xlarge", "m5.large")  # listed, and configured
    refuse_unlisted_values(settings, "ml", "instance_types", LABEL_INSTANCE_TYPE, listed, sel)
    with pytest.raises(InvalidPodSpec) as err:
        refuse_unlisted_values(
            settings, "default", "instance_types", LABEL_INSTANCE_TYPE, ("g5.xlarge",), sel
        )
    assert err.value.reason == REASON_NOT_ALLOWED
    assert "nodeSelector node.kubernetes.io/instance-type: 'g5.xlarge'" in err.value.message


# -- any input: a placement or a clean refusal ---------------------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=12)
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
_keys = st.sampled_from(
    [
        "node.kubernetes.io/instance-type",
        "topology.kubernetes.io/zone",
        "kubernetes.io/arch",
        "karpenter.k8s.aws/instance-generation",
        "karpenter.sh/capacity-type",
        "kubernetes.io/os",
        "example.com/x",
    ]
)
_expressions = st.fixed_dictionaries(
    {
        "key": _keys | _scalars,
        "operator": st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt", "Near"]) | _scalars,
        "values": st.lists(
            st.sampled_from(["c6i.large", "m5.large", "arm64", "5", "spot", "us-west-2b", "x"])
        )
        | _json,
    }
)
_terms = st.lists(
    st.fixed_dictionaries({"matchExpressions": st.lists(_expressions, max_size=3) | _json}) | _json,
    max_size=3,
)
_quantities = st.sampled_from(["6", "20Gi", "500m", "1e3", "-1", "lots", "1Ti", ""]) | _scalars
_containers = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.text(max_size=4),
            "resources": st.fixed_dictionaries(
                {"requests": st.dictionaries(st.sampled_from(["cpu", "memory"]), _quantities)}
            )
            | _json,
        }
    )
    | _json,
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(
    node_selector=st.dictionaries(_keys, st.sampled_from(["c6i.large", "us-west-2b", "arm64", "spot"]))
    | _json,
    terms=_terms | _json,
    containers=_containers,
    init=_containers,
)
def test_any_selector_and_resources_give_a_placement_or_a_clean_refusal(
    node_selector: Any, terms: Any, containers: Any, init: Any
) -> None:
    from tests.support.fakes import FakeEc2
    from vkec2.fleet.choice import InstanceChoice

    cfg = Settings.model_validate(
        {
            "ec2": {
                "image_id": "ami-0123456789abcdef0",
                "subnets": list(SUBNETS),
                "instance_type_choices": list(CHOICES),
            },
            "allowlists": {"default": {"instance_types": ["c6i.large"]}},
        }
    )
    ec2 = FakeEc2()
    ec2.zones = dict(ZONES)
    spec = {
        "metadata": {"uid": "u", "namespace": "default"},
        "spec": {
            "nodeSelector": node_selector,
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
                }
            },
            "containers": containers,
            "initContainers": init,
        },
    }
    try:
        params = InstanceChoice(cfg, ec2).params(spec)
    except InvalidPodSpec as exc:
        assert exc.reason and exc.message
        return
    assert params.instance_type in {*CHOICES, "c6i.large"}
    assert params.subnet_id in SUBNETS


PLAINTEXT = {"agent": {"insecure_plaintext": True}}  # the transport rule is not under test here


def test_bad_instance_type_choices_are_config_errors_naming_the_key(tmp_path: Any) -> None:
    from vkec2.config import InvalidConfig, load_config

    for choices, problem in ((["m5.large", "m5.large"], "listed twice"), (["m5 large"], "instance type")):
        path = tmp_path / "c.yaml"
        path.write_text(json.dumps({"ec2": {"instance_type_choices": choices}, **PLAINTEXT}))
        with pytest.raises(InvalidConfig) as err:
            load_config(path, env={})
        assert any("ec2.instance_type_choices" in e and problem in e for e in err.value.errors), (
            err.value.errors
        )
    path.write_text(json.dumps({"ec2": {"instance_type_choices": CHOICES}, **PLAINTEXT}))
    assert load_config(path, env={}).settings.ec2.instance_type_choices == list(CHOICES)
