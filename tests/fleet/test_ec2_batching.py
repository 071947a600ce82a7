"""Coalesced EC2 calls: many workers' describes and terminations become a few calls at the endpoint.

The batching gateway runs against moto's server through the counting proxy and a real Redis; each
"worker" is a thread with a gateway of its own (its own boto3 client), so the coalescing happens
through Redis as it does between processes. The counts are the proxy's: calls at the endpoint.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import launch_params
from tests.support.services import wait_until
from vkec2.config import Settings
from vkec2.ec2.batching import BatchingGateway
from vkec2.ec2.gateway import Ec2Gateway
from vkec2.errors import Ec2Error
from vkec2.store.batches import DESCRIBE
from vkec2.store.redis_store import Store

WORKERS = 20

MakeGateway = Callable[[], BatchingGateway]


@pytest.fixture
def settings(ec2_proxy: Ec2Proxy) -> Settings:
    return Settings.model_validate(
        {
            "cluster_name": f"batch-{uuid.uuid4().hex[:8]}",
            "aws": {"endpoint_url": ec2_proxy.url, "max_attempts": 1, "batch_window_seconds": 0.3},
        }
    )


@pytest.fixture
def make_gateway(settings: Settings, redis_url: str) -> Iterator[MakeGateway]:
    stores: list[Store] = []

    def make() -> BatchingGateway:
        store = Store.from_url(redis_url, settings.cluster_name)
        stores.append(store)
        return BatchingGateway(settings, store)

    yield make
    for store in stores:
        store.close()


def launch(settings: Settings, count: int) -> list[str]:
    params = launch_params()
    gateway = Ec2Gateway(settings)
    tags = {"purpose": "batching-test"}
    launched = [gateway.run_instance(params, tags, f"batch-{uuid.uuid4().hex}") for _ in range(count)]
    return [instance["InstanceId"] for instance in launched]


def in_threads(work: Callable[[int], object], count: int) -> list[BaseException]:
    """Run ``work(i)`` in ``count`` threads started together; the exceptions they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(i: int) -> None:
        start.wait()
        try:
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def test_concurrent_describes_share_a_few_calls(
    settings: Settings, make_gateway: MakeGateway, ec2_proxy: Ec2Proxy
) -> None:
    ids = launch(settings, WORKERS)
    gateways = [make_gateway() for _ in ids]
    seen: dict[int, dict[str, object]] = {}
    ec2_proxy.reset_counts()

    def work(i: int) -> None:
        seen[i] = dict(gateways[i].describe([ids[i]]))

    assert in_threads(work, WORKERS) == []
    assert all(ids[i] in seen[i] for i in range(WORKERS)), "every worker got its own instance"
    calls = ec2_proxy.calls["DescribeInstances"]
    print(f"{WORKERS} concurrent describes -> {calls} DescribeInstances at the endpoint")
    assert calls <= 4


def test_an_unknown_instance_is_absent_and_the_others_are_answered(
    settings: Settings, make_gateway: MakeGateway
) -> None:
    (known,) = launch(settings, 1)
    found = make_gateway().describe([known, "i-0123456789abcdef0"])
    assert set(found) == {known}


def test_concurrent_terminations_share_a_few_calls(
    settings: Settings, make_gateway: MakeGateway, ec2_proxy: Ec2Proxy
) -> None:
    ids = launch(settings, WORKERS)
    gateways = [make_gateway() for _ in ids]
    ec2_proxy.reset_counts()

    assert in_threads(lambda i: gateways[i].terminate([ids[i]]), WORKERS) == []

    calls = ec2_proxy.calls["TerminateInstances"]
    print(f"{WORKERS} concurrent terminations -> {calls} TerminateInstances at the endpoint")
    assert calls <= 4
    states = {i["InstanceId"]: i["State"]["Name"] for i in Ec2Gateway(settings).describe(ids).values()}
    assert set(states) == set(ids)
    assert set(states.values()) <= {"shutting-down", "terminated"}


def test_a_failed_leader_leaves_no_waiter_without_an_answer(
    settings: Settings, make_gateway: MakeGateway, ec2_proxy: Ec2Proxy
) -> None:
    ids = launch(settings, 6)
    gateways = [make_gateway() for _ in ids]
    ec2_proxy.throttle_fraction = 1.0  # the first batches fail: EC2 throttles everything
    failures: list[BaseException] = []
    answers: dict[int, dict[str, object]] = {}
    release = threading.Timer(1.0, lambda: setattr(ec2_proxy, "throttle_fraction", 0.0))
    release.start()

    def work(i: int) -> None:
        try:
            answers[i] = dict(gateways[i].describe([ids[i]]))
        except Ec2Error as exc:
            failures.append(exc)

    assert in_threads(work, len(ids)) == []
    release.join()
    # Whoever led a throttled batch got the (retryable) error; nobody waited for ever, and every
    # worker that did not lead a failed batch has its answer.
    assert all(isinstance(f, Ec2Error) and f.retryable for f in failures)
    assert len(failures) + len(answers) == len(ids)
    assert all(ids[i] in answers[i] for i in answers)


def test_window_zero_calls_ec2_directly(settings: Settings, redis_url: str, ec2_proxy: Ec2Proxy) -> None:
    direct = settings.model_copy(update={"aws": settings.aws.model_copy(update={"batch_window_seconds": 0})})
    (iid,) = launch(settings, 1)
    store = Store.from_url(redis_url, settings.cluster_name)
    try:
        ec2_proxy.reset_counts()
        assert iid in BatchingGateway(direct, store).describe([iid])
        assert ec2_proxy.calls["DescribeInstances"] == 1
    finally:
        store.close()


def test_terminations_that_do_not_wait_are_sent_once_per_window(
    settings: Settings, make_gateway: MakeGateway, ec2_proxy: Ec2Proxy
) -> None:
    ids = launch(settings, WORKERS)
    gateways = [make_gateway() for _ in ids]
    ec2_proxy.reset_counts()
    answers: dict[int, list[str] | None] = {}

    # Each "delete step" asks once and returns at once; those not sent yet ask again later.
    assert in_threads(lambda i: answers.__setitem__(i, gateways[i].terminate_soon([ids[i]])), WORKERS) == []
    first_round = ec2_proxy.calls["TerminateInstances"]
    pending = [i for i, answer in answers.items() if answer is None]
    assert first_round == 1 and len(pending) >= WORKERS - 1  # one call; nobody held a thread
    wait_until(
        lambda: all(gateways[i].terminate_soon([ids[i]]) is not None for i in pending),
        30,
        "every termination to be sent",
        interval=0.2,
    )
    calls = ec2_proxy.calls["TerminateInstances"]
    print(f"{WORKERS} non-waiting terminations -> {calls} TerminateInstances at the endpoint")
    assert calls <= 3
    states = {i["InstanceId"]: i["State"]["Name"] for i in Ec2Gateway(settings).describe(ids).values()}
    assert set(states.values()) <= {"shutting-down", "terminated"}


#: A describe leader in a process of its own, against an endpoint that never answers: it takes the
#: lead, gathers the wanted IDs and waits in its DescribeInstances until the test SIGKILLs it.
LEADER = """
import sys
from vkec2.config import Settings
from vkec2.ec2.batching import BatchingGateway
from vkec2.store.redis_store import Store
settings = Settings.model_validate_json(sys.argv[1])
BatchingGateway(settings, Store.from_url(sys.argv[2], settings.cluster_name)).describe([sys.argv[3]])
"""


def test_a_killed_leader_holds_up_the_others_for_seconds_not_its_whole_call_budget(
    settings: Settings, ec2_proxy: Ec2Proxy, redis_url: str
) -> None:
    (iid,) = launch(settings, 1)
    silent = socket.socket()  # accepts connections (the backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    # As deployed: one describe may take 5 attempts x (2 + 10) s plus the rate-limit wait.
    deployed = {"connect_timeout_seconds": 2, "read_timeout_seconds": 10, "max_attempts": 5}
    leader_settings = settings.model_copy(
        update={
            "aws": settings.aws.model_copy(
                update={**deployed, "endpoint_url": f"http://127.0.0.1:{silent.getsockname()[1]}"}
            )
        }
    )
    ours = settings.model_copy(update={"aws": settings.aws.model_copy(update=deployed)})
    store = Store.from_url(redis_url, settings.cluster_name)
    leader = subprocess.Popen(
        [sys.executable, "-c", LEADER, leader_settings.model_dump_json(), redis_url, iid],
        env={**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
    )
    try:
        lead = store.keys.ec2_batch_lead(DESCRIBE)
        wanted = store.keys.ec2_batch_wanted(DESCRIBE)

        # The leader holds the lead and has gathered the wanted IDs: it is in its DescribeInstances.
        def in_call() -> bool:
            return bool(store.redis.exists(lead)) and store.redis.zcard(wanted) == 0

        wait_until(in_call, 30, "a leader in its call")
        leader.kill()
        leader.wait(10)
        ec2_proxy.reset_counts()
        answer: dict[str, object] = {}
        follower = threading.Thread(
            target=lambda: answer.update(BatchingGateway(ours, store).describe([iid])), daemon=True
        )
        follower.start()
        follower.join(20)  # a lead used to outlive its killed holder by the whole call budget (80 s here)
        assert not follower.is_alive(), "a follower waited for a killed leader's lead to expire"
        assert iid in answer
        assert ec2_proxy.calls["DescribeInstances"] == 1
    finally:
        leader.kill()
        silent.close()
        store.close()
