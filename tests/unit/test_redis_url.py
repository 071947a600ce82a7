"""``redis_url`` and Sentinel: the URL checks, their messages, and what the broker, RedBeat and the
store are configured with (a plain URL and a Sentinel one; the cluster's kombu key prefix)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from redis.exceptions import ConnectionError, ReadOnlyError
from redis.sentinel import SentinelConnectionPool

from vkec2.broker.app import celery_settings
from vkec2.config import Settings
from vkec2.config.redis_url import parse_redis_url, redact_url
from vkec2.store.base import connect
from vkec2.store.redis_store import Store

SENTINELS = "sentinel://:s3cret@10.0.0.1:26379/2;sentinel://10.0.0.2:26380;sentinel://10.0.0.3"


def test_a_sentinel_url_names_every_sentinel_and_the_masters_credentials() -> None:
    target = parse_redis_url(SENTINELS)
    assert target.is_sentinel
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379))
    assert (target.password, target.db) == ("s3cret", 2)
    assert not parse_redis_url("redis://h:6379/0").is_sentinel


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://h:1", "must be a redis://, rediss://, unix:// or sentinel:// URL, not http"),
        ("sentinel://h:1;redis://h:2", "every URL of a Sentinel list must be sentinel://host:port"),
        ("sentinel://h:1;", "an empty entry"),
        ("sentinel://:1", "names no Sentinel host"),
        ("sentinel://h:99999", "the port is not a number"),
        ("sentinel://h:1/x", "must be a number, not 'x'"),
        ("sentinel://h:1?master=m", "takes no ?query"),
        ("sentinel://h:1;sentinel://:pw@h:2", "only the first sentinel:// URL may carry a password"),
    ],
)
def test_a_bad_url_is_refused_naming_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("?", r"\?")):
        parse_redis_url(url)


def test_messages_never_show_a_password() -> None:
    with pytest.raises(ValueError) as caught:
        parse_redis_url("sentinel://:s3cret@h:1/x")
    assert "s3cret" not in str(caught.value) and ":***@" in str(caught.value)
    assert redact_url(SENTINELS).startswith("sentinel://:***@10.0.0.1:26379/2;")
    assert redact_url("redis://user:pw@h:6379/0") == "redis://user:***@h:6379/0"


def test_the_master_name_goes_with_a_sentinel_url_and_only_with_one() -> None:
    with pytest.raises(ValidationError, match="set redis_sentinel_master"):
        Settings(redis_url=SENTINELS)
    with pytest.raises(ValidationError, match="redis_url is not a sentinel:// URL"):
        Settings(redis_sentinel_master="mymaster")
    with pytest.raises(ValidationError, match="redis_wait_replicas"):
        Settings(redis_wait_replicas=-1)


def test_kombu_keys_carry_the_cluster_prefix() -> None:
    conf = celery_settings(Settings(cluster_name="blue"))
    options = conf["broker_transport_options"]
    assert isinstance(options, dict)
    assert options["global_keyprefix"] == "vkec2:blue:celery:"
    assert "master_name" not in options
    assert conf["redbeat_redis_url"] == "redis://127.0.0.1:6379/0"
    assert conf["redbeat_key_prefix"] == "vkec2:blue:beat:"


def test_broker_and_redbeat_reach_the_master_through_the_sentinels() -> None:
    conf = celery_settings(Settings(redis_url=SENTINELS, redis_sentinel_master="mymaster"))
    assert conf["broker_url"] == SENTINELS  # kombu reads the ';' list itself
    options = conf["broker_transport_options"]
    assert isinstance(options, dict) and options["master_name"] == "mymaster"
    assert conf["redbeat_redis_url"] == "redis-sentinel://"
    beat = conf["redbeat_redis_options"]
    assert isinstance(beat, dict)
    assert beat["sentinels"] == [("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379)]
    assert (beat["service_name"], beat["password"], beat["db"]) == ("mymaster", "s3cret", 2)
    assert float(beat["retry_period"]) > 0


def test_the_store_client_asks_the_sentinels_and_retries_once_after_a_failover() -> None:
    client = connect(SENTINELS, sentinel_master="mymaster")  # connects lazily: nothing is dialled
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "mymaster"
    assert pool.connection_kwargs["db"] == 2 and pool.connection_kwargs["password"] == "s3cret"
    retry = pool.connection_kwargs["retry"]
    assert retry._retries == 1
    assert {ConnectionError, ReadOnlyError} <= set(retry._supported_errors)
    store = Store(client, "blue", wait_replicas=1)
    assert store.address() == "sentinel:mymaster/2" and store.wait_replicas == 1
    with pytest.raises(ValueError, match="set redis_sentinel_master"):
        connect(SENTINELS)
