"""Spot's pure rules: capacity types from config and annotation, market options, interruption reading.

A capacity type is ``on-demand`` (the default), ``spot`` or ``spot-or-on-demand``, from
``ec2.capacity_type``, a warm pool's ``capacity_type`` or the ``compute.amazonaws.com/capacity-type``
annotation; anything else is a config error or an InvalidAnnotation. A Spot launch sends one-time,
terminate-on-interruption market options (``MaxPrice`` only when ``ec2.spot_max_price`` is set). An
instance is interrupted when DescribeInstances says Spot lifecycle and a ``Server.Spot*`` reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vkec2.config import InvalidConfig, Settings, load_config
from vkec2.config.allowlist import KINDS
from vkec2.contract import (
    CAPACITY_ERROR_CODES,
    CAPACITY_TYPE_ANNOTATION,
    ON_DEMAND,
    SPOT,
    SPOT_OR_ON_DEMAND,
)
from vkec2.domain.agents import SpotNotice
from vkec2.domain.podspec import launch_params
from vkec2.domain.spot import (
    choose_capacity_type,
    interruption,
    market_options,
    markets,
    notice_message,
    offering_zone,
    selector_capacity_type,
    spot_tags,
)
from vkec2.errors import InvalidPodSpec
from vkec2.fleet.choice import placed

IMAGE = "ami-0123456789abcdef0"
OPEN = {"default": {kind: ["*"] for kind in KINDS}}


def cfg(pools: bool = False, **ec2: Any) -> Settings:
    """Settings with every kind allowed; ``pools``: a Spot warm pool (then the default pool)."""
    warm = [{"name": "spotty", "capacity_type": SPOT}] if pools else []
    return Settings.model_validate(
        {"allowlists": OPEN, "ec2": {"image_id": IMAGE, **ec2}, "warm_pools": warm}
    )


def pod(**annotations: str) -> dict[str, Any]:
    return {"metadata": {"uid": "u-1", "namespace": "default", "annotations": annotations}}


def test_the_annotation_beats_the_configuration() -> None:
    assert choose_capacity_type(None, ON_DEMAND) == ON_DEMAND
    assert choose_capacity_type(SPOT_OR_ON_DEMAND, ON_DEMAND) == SPOT_OR_ON_DEMAND


def test_a_selector_names_the_markets_it_allows() -> None:
    assert selector_capacity_type(()) is None
    assert selector_capacity_type((SPOT,)) == SPOT
    assert selector_capacity_type((ON_DEMAND,)) == ON_DEMAND
    assert selector_capacity_type((ON_DEMAND, SPOT)) == SPOT_OR_ON_DEMAND


def test_markets_in_the_order_they_are_tried() -> None:
    assert markets(ON_DEMAND) == (ON_DEMAND,)
    assert markets(SPOT) == (SPOT,)
    assert markets(SPOT_OR_ON_DEMAND) == (SPOT, ON_DEMAND)


def test_market_options_of_a_spot_launch() -> None:
    assert market_options(ON_DEMAND, "0.5") == {}
    options = market_options(SPOT)
    assert options == {
        "InstanceMarketOptions": {
            "MarketType": "spot",
            "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
        }
    }
    assert market_options(SPOT, "0.05")["InstanceMarketOptions"]["SpotOptions"]["MaxPrice"] == "0.05"
    assert spot_tags(SPOT) == {"vkec2.io/capacity-type": "spot"} and spot_tags(ON_DEMAND) == {}


def test_spot_and_on_demand_offerings_are_marked_apart() -> None:
    assert offering_zone("us-west-2a", ON_DEMAND) == "us-west-2a"
    assert offering_zone("us-west-2a", SPOT) != offering_zone("us-west-2a", ON_DEMAND)
    assert {
        "SpotMaxPriceTooLow",
        "MaxSpotInstanceCountExceeded",
        "UnfulfillableCapacity",
    } <= CAPACITY_ERROR_CODES


SPOT_GONE = {
    "InstanceId": "i-1",
    "InstanceType": "m5.large",
    "InstanceLifecycle": "spot",
    "State": {"Name": "shutting-down"},
    "StateReason": {"Code": "Server.SpotInstanceTermination", "Message": "Spot instance termination"},
}


@pytest.mark.parametrize(
    ("instance", "interrupted"),
    [
        (SPOT_GONE, True),
        ({**SPOT_GONE, "StateReason": {"Code": "Server.SpotInstanceShutdown"}}, True),
        ({**SPOT_GONE, "StateReason": {"Code": "Client.UserInitiatedShutdown"}}, False),
        ({k: v for k, v in SPOT_GONE.items() if k != "InstanceLifecycle"}, False),
        ({k: v for k, v in SPOT_GONE.items() if k != "StateReason"}, False),
        (None, False),
    ],
)
def test_an_interruption_is_spot_lifecycle_and_a_spot_reason(
    instance: dict[str, Any] | None, interrupted: bool
) -> None:
    found = interruption(instance)
    assert (found is not None) == interrupted
    if instance is SPOT_GONE:
        assert found == "Server.SpotInstanceTermination: Spot instance termination"


def test_shape_and_notice_messages() -> None:
    assert placed(SPOT_GONE).endswith(", spot") and placed({"InstanceType": "c5.large"}) == "c5.large"
    warning = notice_message("i-1", SpotNotice("interruption", "terminate", "2026-01-01T00:02:00Z"))
    assert "terminate" in warning and "i-1" in warning and "2026-01-01T00:02:00Z" in warning
    assert "rebalanc" in notice_message("i-1", SpotNotice("rebalance", "", "2026-01-01T00:00:00Z"))


# -- config and annotation --------------------------------------------------------------------


def test_the_capacity_type_comes_from_config_then_annotation() -> None:
    assert launch_params(cfg(), pod()).capacity_type == ON_DEMAND
    assert launch_params(cfg(capacity_type=SPOT), pod()).capacity_type == SPOT
    annotated = launch_params(cfg(), pod(**{CAPACITY_TYPE_ANNOTATION: SPOT_OR_ON_DEMAND}))
    assert annotated.capacity_type == SPOT_OR_ON_DEMAND and annotated.warm_pool is None
    priced = launch_params(cfg(capacity_type=SPOT, spot_max_price="0.12"), pod())
    assert priced.spot_max_price == "0.12"


def test_a_pools_capacity_type_and_a_contradicting_annotation() -> None:
    params = launch_params(cfg(pools=True), pod(**{"compute.amazonaws.com/warm-pool": "spotty"}))
    assert params.capacity_type == SPOT
    assert launch_params(cfg(pools=True), pod()).capacity_type == SPOT  # the default pool's
    with pytest.raises(InvalidPodSpec) as info:
        launch_params(
            cfg(pools=True),
            pod(**{"compute.amazonaws.com/warm-pool": "spotty", CAPACITY_TYPE_ANNOTATION: ON_DEMAND}),
        )
    assert info.value.reason == "InvalidAnnotation" and "contradicts warm pool 'spotty'" in info.value.message


@pytest.mark.parametrize("value", ["Spot", "cheap", "spot,on-demand"])
def test_an_unknown_capacity_type_annotation_is_invalid(value: str) -> None:
    with pytest.raises(InvalidPodSpec) as info:
        launch_params(cfg(), pod(**{CAPACITY_TYPE_ANNOTATION: value}))
    assert info.value.reason == "InvalidAnnotation"
    assert CAPACITY_TYPE_ANNOTATION in info.value.message and "spot-or-on-demand" in info.value.message


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        (
            {"ec2": {"capacity_type": "cheap"}},
            "ec2.capacity_type: 'cheap' is not a capacity type",
        ),
        (
            {"warm_pools": [{"name": "a", "capacity_type": "x"}]},
            "warm_pools[0].capacity_type: 'x' is not a capacity type",
        ),
        ({"ec2": {"spot_max_price": "free"}}, "ec2.spot_max_price: 'free' is not a price"),
        ({"ec2": {"spot_max_price": 0}}, "ec2.spot_max_price: '0' is not a positive price"),
        ({"allowlists": {"default": {"capacity_types": ["cheap"]}}}, "allowlists.default.capacity_types"),
    ],
)
def test_bad_spot_settings_are_config_errors(tmp_path: Path, section: dict[str, Any], fragment: str) -> None:
    path = tmp_path / "vkec2.json"
    path.write_text(json.dumps(section))
    with pytest.raises(InvalidConfig) as info:
        load_config(path, env={"VKEC2_AGENT__TLS": json.dumps({"ca_cert_file": "/ca.crt"})})
    assert any(fragment in error for error in info.value.errors), info.value.errors


def test_a_numeric_spot_max_price_is_accepted() -> None:
    assert Settings.model_validate({"ec2": {"spot_max_price": 0.05}}).ec2.spot_max_price == "0.05"
