"""Rows E1 to E20 of "What each error does" (docs/architecture.md): every error class ends bounded.

Lifecycle rows run one step on the fakes; task rows run ``tasks.pods.create`` / ``delete`` in
process (``Task.run``) on a fleet context made of the fakes, with the task's ``retry`` recorded
instead of re-publishing, so a test sees whether the step is retried later, the pod failed, or the
chain handed on. Agent rows also check how the gRPC client maps each status code.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import botocore.exceptions
import grpc
import pytest
import redis

from tasks import pods
from tests.unit.fleet.world import UID, VISIBILITY, World, settings
from vkec2 import contract
from vkec2.agent_client.client import translate
from vkec2.domain.agents import AgentTarget
from vkec2.domain.models import Phase
from vkec2.ec2.gateway import _ec2_errors
from vkec2.errors import AgentError, Ec2Error, InvalidPodSpec, LockBusy, StaleFence

# -- helpers -------------------------------------------------------------------------------------


class _Call(grpc.RpcError, grpc.Call):
    """A failed gRPC call with a status code, as grpcio raises it."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "details"

    def initial_metadata(self) -> Any:
        return ()

    def trailing_metadata(self) -> Any:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


def agent_error(code: grpc.StatusCode) -> AgentError:
    return translate(_Call(code), AgentTarget(endpoint="10.0.0.1:7443", instance_id="i-1"), "Call")


def ec2_error(code: str, action: str = "RunInstances") -> Ec2Error:
    """The Ec2Error the gateway raises for an AWS error ``code``."""
    response: Any = {"Error": {"Code": code, "Message": "m"}}
    with pytest.raises(Ec2Error) as err, _ec2_errors(action):
        raise botocore.exceptions.ClientError(response, action)
    return err.value


class Retried(Exception):
    """What the recorded ``Task.retry`` raises: the task would run again after ``countdown``."""


@dataclass
class TaskRun:
    world: World
    retries: list[dict[str, Any]]
    published: list[dict[str, Any]]

    def create(self, retries: int = 0, step_retries: int | None = None) -> str:
        return self._run(pods.create, retries, retries if step_retries is None else step_retries)

    def delete(self, retries: int = 0) -> str:
        return self._run(pods.delete, retries, retries)

    @staticmethod
    def _run(task: Any, retries: int, step_retries: int) -> str:
        """Run ``task`` as its delivery after ``retries`` retries, ``step_retries`` of them after errors."""
        headers = {contract.STEP_RETRIES_HEADER: step_retries} if step_retries else None
        task.push_request(retries=retries, id="task-1", headers=headers)
        try:
            return str(task.run(uid=UID))
        finally:
            task.pop_request()


@pytest.fixture
def run(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[TaskRun]:
    """The pod tasks on a fleet context made of the world's fakes."""
    ctx = SimpleNamespace(settings=world.settings, store=world.store, lifecycle=world.lifecycle)
    runner = TaskRun(world, [], [])

    def retry(task: Any) -> Any:
        def record(
            exc: Exception | None = None,
            countdown: float = 0,
            max_retries: int | None = None,
            headers: dict[str, Any] | None = None,
        ) -> None:
            runner.retries.append(
                {"exc": exc, "countdown": countdown, "max_retries": max_retries, "headers": headers}
            )
            raise Retried(str(exc))

        return record

    monkeypatch.setattr(pods, "fleet", lambda: ctx)
    for task in (pods.create, pods.delete):
        monkeypatch.setattr(task, "retry", retry(task))
    monkeypatch.setattr(pods.create, "apply_async", lambda **kw: runner.published.append(kw))
    yield runner


def raising(world: World, exc: BaseException) -> None:
    """The next create step raises ``exc`` (whatever the lifecycle would have done)."""

    def step(lock: Any, rec: Any) -> float | None:
        raise exc

    world.lifecycle.create_step = step  # type: ignore[method-assign]


def assert_retried_then_failed(run: TaskRun, exc: BaseException, reason: str) -> None:
    run.world.seed()
    raising(run.world, exc)
    with pytest.raises(Retried):
        run.create()
    retry = run.retries[-1]
    assert retry["headers"] == {contract.STEP_RETRIES_HEADER: 1} and retry["countdown"] >= 0
    assert run.world.rec.phase is Phase.PENDING  # nothing written: the same step again later
    assert run.create(retries=pods.EC2_RETRY_MAX) == "Failed"
    rec = run.world.rec
    assert (rec.phase, rec.reason) == (Phase.FAILED, reason)
    assert "still failing after 20 retries" in rec.message


# -- EC2 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["RequestLimitExceeded", "Throttling"])
def test_E1_throttling_retries_with_backoff_then_fails(run: TaskRun, code: str) -> None:
    exc = ec2_error(code)
    assert exc.retryable and exc.reason == "EC2Throttled"
    assert_retried_then_failed(run, exc, "EC2Throttled")


def test_E2_ec2_unreachable_or_timed_out_retries_with_backoff(run: TaskRun) -> None:
    with pytest.raises(Ec2Error) as err, _ec2_errors("DescribeInstances"):
        raise botocore.exceptions.ReadTimeoutError(endpoint_url="https://ec2")
    assert err.value.retryable and err.value.reason == "EC2Unreachable"
    assert_retried_then_failed(run, err.value, "EC2Unreachable")


@pytest.mark.parametrize("code", ["InternalError", "Unavailable", "ServiceUnavailable"])
def test_E3_ec2_server_errors_retry_with_backoff(run: TaskRun, code: str) -> None:
    exc = ec2_error(code)
    assert exc.retryable and exc.reason == "EC2Unavailable"
    assert_retried_then_failed(run, exc, "EC2Unavailable")


def test_E4_not_found_within_the_visibility_window_is_pending(world: World) -> None:
    inst = world.instance("pending")
    world.ec2.hidden.add(inst["InstanceId"])
    world.seed(Phase.PROVISIONING, instance=inst)
    assert world.step() is not None
    assert (world.rec.phase, world.rec.attempt) == (Phase.PROVISIONING, 0)


def test_E5_not_found_past_the_window_replaces_the_instance(world: World) -> None:
    inst = world.instance("pending")
    world.ec2.hidden.add(inst["InstanceId"])
    world.seed(Phase.PROVISIONING, instance=inst, launched_at=time.time() - VISIBILITY - 1)
    world.step()
    assert (world.rec.phase, world.rec.reason, world.rec.attempt) == (Phase.PENDING, "InstanceLost", 1)


def test_E6_not_found_on_terminate_of_a_young_instance_is_retried_by_the_task(run: TaskRun) -> None:
    world = run.world
    inst = world.instance("pending")
    world.ec2.hidden.add(inst["InstanceId"])
    world.seed(Phase.PROVISIONING, instance=inst)
    raising(world, ec2_error("UnauthorizedOperation"))  # the step fails: fail() terminates the instance
    with pytest.raises(Retried):
        run.create()
    assert run.retries[-1]["exc"].reason == "InstanceNotYetVisible"
    assert world.rec.phase is Phase.PROVISIONING


@pytest.mark.parametrize(
    "code", ["InsufficientInstanceCapacity", "InsufficientHostCapacity", "VcpuLimitExceeded", "Unsupported"]
)
def test_E7_capacity_codes_wait_for_capacity_with_the_aws_code(run: TaskRun, code: str) -> None:
    run.world.seed()
    run.world.ec2.no_capacity[(None, None)] = code
    assert run.create() == "Pending"
    rec = run.world.rec
    assert code in rec.message and run.retries == [] and len(run.published) == 1  # the chain goes on
    assert rec.attempt == 0 and not rec.instance_id


def test_E8_idempotent_parameter_mismatch_starts_a_new_attempt(run: TaskRun) -> None:
    run.world.seed()
    run.world.ec2.errors["RunInstances"] = ec2_error("IdempotentParameterMismatch")
    assert run.create() == "Pending"
    assert (run.world.rec.reason, run.world.rec.attempt) == ("IdempotentParameterMismatch", 1)
    assert len(run.published) == 1  # the chain goes on


@pytest.mark.parametrize(
    "code", ["UnauthorizedOperation", "InvalidParameterValue", "InvalidAMIID.NotFound", "SomethingNew"]
)
def test_E9_other_ec2_codes_fail_the_pod(run: TaskRun, code: str) -> None:
    run.world.seed()
    run.world.ec2.errors["RunInstances"] = ec2_error(code)
    assert run.create() == "Failed"
    assert code in run.world.rec.message and run.retries == []
    assert not ec2_error(code).retryable


# -- the agent -----------------------------------------------------------------------------------

UNAVAILABLE_CODES = ["UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "RESOURCE_EXHAUSTED", "ABORTED"]
REJECTED_CODES = [
    "INVALID_ARGUMENT",
    "FAILED_PRECONDITION",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "UNIMPLEMENTED",
    "UNAUTHENTICATED",
    "OUT_OF_RANGE",
]
FAULTY_CODES = ["INTERNAL", "UNKNOWN", "DATA_LOSS"]


def launching(world: World, error: AgentError, *, expired: bool) -> None:
    inst = world.instance("running")
    launched_at = time.time() - (2 * world.settings.agent.boot_timeout_seconds if expired else 0)
    world.seed(Phase.LAUNCHING, instance=inst, launched_at=launched_at)
    world.agents.status_by[inst["InstanceId"]] = error


def booting(world: World, error: AgentError, *, expired: bool) -> None:
    inst = world.instance("running")
    launched_at = time.time() - (2 * world.settings.agent.boot_timeout_seconds if expired else 0)
    world.seed(Phase.BOOTING, instance=inst, launched_at=launched_at)
    world.agents.launch_by[inst["InstanceId"]] = error


@pytest.mark.parametrize("code", UNAVAILABLE_CODES)
def test_E10_agent_unavailable_polls_then_replaces_past_the_boot_timeout(code: str) -> None:
    error = agent_error(grpc.StatusCode[code])
    assert error.reason == "AgentUnavailable"
    for setup, lost in ((launching, "AgentLost"), (booting, "AgentBootTimeout")):
        world = World(settings())
        setup(world, error, expired=False)
        assert world.step() is not None and world.rec.attempt == 0
        world = World(settings())
        setup(world, error, expired=True)
        world.step()
        assert (world.rec.phase, world.rec.reason, world.rec.attempt) == (Phase.PENDING, lost, 1)


def test_E11_permission_denied_replaces_the_instance_at_once() -> None:
    error = agent_error(grpc.StatusCode.PERMISSION_DENIED)
    assert error.reason == "AgentIdentityMismatch"
    for setup in (launching, booting):
        world = World(settings())
        setup(world, error, expired=False)
        world.step()
        assert (world.rec.phase, world.rec.reason, world.rec.attempt) == (Phase.PENDING, error.reason, 1)


@pytest.mark.parametrize("code", REJECTED_CODES)
def test_E12_agent_refusals_replace_the_instance_at_once(code: str) -> None:
    error = agent_error(grpc.StatusCode[code])
    assert error.reason == "AgentRejected"
    for setup in (launching, booting):
        world = World(settings())
        setup(world, error, expired=False)
        world.step()
        assert (world.rec.phase, world.rec.reason, world.rec.attempt) == (Phase.PENDING, "AgentRejected", 1)


@pytest.mark.parametrize("code", FAULTY_CODES)
def test_E13_a_faulty_agent_polls_then_replaces_past_the_boot_timeout(code: str) -> None:
    error = agent_error(grpc.StatusCode[code])
    assert type(error) is AgentError
    for setup, lost in ((launching, "AgentLost"), (booting, "AgentBootTimeout")):
        world = World(settings())
        setup(world, error, expired=False)
        assert world.step() is not None and world.rec.phase in (Phase.LAUNCHING, Phase.BOOTING)
        world = World(settings())
        setup(world, error, expired=True)
        world.step()
        assert (world.rec.phase, world.rec.reason) == (Phase.PENDING, lost)


@pytest.mark.parametrize("code", ["UNAVAILABLE", "PERMISSION_DENIED", "INVALID_ARGUMENT", "INTERNAL"])
def test_E14_any_agent_error_on_delete_still_terminates_the_instance(world: World, code: str) -> None:
    inst = world.instance("running")
    world.seed(Phase.RUNNING, instance=inst)
    world.agents.terminate_by[inst["InstanceId"]] = agent_error(grpc.StatusCode[code])
    world.delete()
    assert world.rec.phase is Phase.TERMINATED and world.ec2.state(inst["InstanceId"]) == "terminated"


# -- Redis, the lock, the spec, the rest -----------------------------------------------------------


def test_E15_redis_unreachable_retries_the_task(run: TaskRun) -> None:
    assert_retried_then_failed(run, redis.ConnectionError("connection refused"), "RedisUnavailable")
    run.world.seed(Phase.TERMINATING, deleted=True)

    def delete(*args: Any) -> None:
        raise redis.TimeoutError("timed out")

    run.world.lifecycle.delete = delete  # type: ignore[method-assign,assignment]
    with pytest.raises(Retried):
        run.delete()


def test_E16_a_lost_lock_or_fence_ends_the_step_as_superseded(run: TaskRun) -> None:
    run.world.seed()
    raising(run.world, StaleFence("another task owns the pod"))
    assert run.create() == "superseded" and run.retries == []
    assert run.world.rec.phase is Phase.PENDING


def test_E17_a_busy_lock_is_retried_soon_without_limit(run: TaskRun) -> None:
    run.world.seed()
    # Past Celery's default of 3 retries and the EC2 budget: still retried soon.
    with run.world.store.locked(UID), pytest.raises(Retried):
        run.create(retries=pods.EC2_RETRY_MAX + 5)
    (retry,) = run.retries
    assert isinstance(retry["exc"], LockBusy) and retry["countdown"] <= 2
    assert retry["max_retries"] == pods.LOCK_RETRY_MAX > 10_000  # not None: Celery reads None as 3
    assert retry["headers"] is None  # a busy lock spends none of the step's error budget


def test_E17_retries_of_a_busy_lock_leave_the_error_budget_whole(run: TaskRun) -> None:
    run.world.seed()
    raising(run.world, ec2_error("RequestLimitExceeded"))
    # Many deliveries spent waiting for another task's lock, none after an error: retried again.
    with pytest.raises(Retried):
        run.create(retries=pods.EC2_RETRY_MAX + 40, step_retries=0)
    assert run.retries[-1]["headers"] == {contract.STEP_RETRIES_HEADER: 1}
    assert run.world.rec.phase is Phase.PENDING


def test_E18_an_invalid_pod_spec_fails_the_pod(run: TaskRun) -> None:
    run.world.seed()
    raising(run.world, InvalidPodSpec("bad annotation", reason="InvalidAnnotation"))
    assert run.create() == "Failed"
    assert run.world.rec.reason == "InvalidAnnotation" and run.retries == []


def test_E19_any_other_exception_fails_the_pod_not_the_chain(run: TaskRun) -> None:
    run.world.seed()
    raising(run.world, KeyError("PrivateIpAddress"))
    assert run.create() == "Failed"
    rec = run.world.rec
    assert rec.reason == "InternalError" and "KeyError" in rec.message and run.retries == []

    def delete(*args: Any) -> None:
        raise ValueError("odd answer")

    # A delete retries whatever it meets (bounded; then the health sweep resumes it).
    run.world.lifecycle.delete = delete  # type: ignore[method-assign,assignment]
    with pytest.raises(Retried):
        run.delete()
    assert run.retries[-1]["headers"] == {contract.STEP_RETRIES_HEADER: 1}
    with pytest.raises(ValueError, match="odd answer"):  # out of retries: the task fails, stays due
        run.delete(retries=pods.EC2_RETRY_MAX)


def test_E20_a_retryable_error_past_the_retries_fails_the_pod(run: TaskRun) -> None:
    assert_retried_then_failed(run, ec2_error("RequestLimitExceeded"), "EC2Throttled")
