"""The agent simulator against moto's EC2 server: virtual agents only for running, booted instances."""

from __future__ import annotations

import functools
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.sim.random_status import random_pod_status
from agent.v1 import simulation_pb2
from tests.agent.conftest import ROOT, fast_conn, pod, sh, simulation_grpc
from tests.support.bootstrap import BootstrapKit
from tests.support.services import ManagedProcess, free_port, port_open, start_moto, wait_until
from vkec2.agent_client.client import AgentClient
from vkec2.domain.agents import AgentTarget
from vkec2.errors import AgentUnavailable

REGION = "us-west-2"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}


@pytest.fixture(scope="module")
def moto() -> Iterator[tuple[str, Any]]:
    import boto3

    for k, v in AWS_ENV.items():
        os.environ.setdefault(k, v)
    proc, url = start_moto()
    ec2 = boto3.client(
        "ec2",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    yield url, ec2
    proc.stop()


def run_instances(ec2: Any, n: int = 1) -> list[str]:
    resp = ec2.run_instances(ImageId="ami-12345678", MinCount=n, MaxCount=n, InstanceType="mac2.metal")
    return [i["InstanceId"] for i in resp["Instances"]]


class Sim:
    def __init__(self, url: str, *args: str) -> None:
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.proc = ManagedProcess(
            "agent-sim",
            [
                sys.executable,
                "-m",
                "vkec2.cli",
                "agent-sim",
                "--listen",
                self.endpoint,
                "--ec2-endpoint",
                url,
                "--region",
                REGION,
                "--refresh-interval",
                "0.5",
                "--miss-refresh",
                "0.2",
                *args,
            ],
            env={**os.environ, **AWS_ENV},
            cwd=str(ROOT),
        ).start()
        wait_until(lambda: port_open(self.port) or not self.proc.alive(), 30, "the simulator to listen")
        assert self.proc.alive(), self.proc.output()
        self.client = AgentClient(fast_conn(self.port, call_timeout_seconds=5.0))
        self.channel = grpc.insecure_channel(self.endpoint)

    def target(self, iid: str) -> AgentTarget:
        return AgentTarget(self.endpoint, iid)

    def stop(self) -> None:
        self.client.close()
        self.channel.close()
        self.proc.stop()


@pytest.fixture
def start_sim(moto: tuple[str, Any]) -> Iterator[Callable[..., Sim]]:
    sims: list[Sim] = []

    def start(*args: str) -> Sim:
        s = Sim(moto[0], *args)
        sims.append(s)
        return s

    yield start
    for s in sims:
        s.stop()


def test_answers_only_for_running_instances(
    moto: tuple[str, Any], start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    _, ec2 = moto
    ids = run_instances(ec2, 3)
    sim = start_sim()
    c = sim.client
    for iid in ids:
        target = sim.target(iid)
        wait_until(functools.partial(c.serving, target), 10, f"virtual agent of {iid}")
        assert c.identity(target) == iid
    unknown = sim.target("i-0123456789abcdef0")
    assert not c.serving(unknown)
    with pytest.raises(AgentUnavailable, match="no running instance"):
        c.status(unknown)

    t = sim.target(ids[0])
    BootstrapKit(tmp_path).fleet(c).bootstrap(t, "token")  # plaintext simulator: an identity check only
    c.launch(t, pod(sh("main", "ignored by the simulated runtime")))
    st = c.status(t)
    assert st.phase == "Running" and st.container_statuses[0]["state"]["running"]
    assert b"container main started" in b"".join(c.logs(t, "main"))
    out = list(c.exec_stream(t, "main", ["echo", "hi"], stdin=[b"ping\n"]))
    assert out == [("stdout", b"simulated exec in main: echo hi\n"), ("stdout", b"ping\n"), ("exit", 0)]
    c.terminate(t, 5)
    assert c.status(t).phase == "Succeeded"

    # Instances are independent, and a crashing simulated container backs off.
    t2 = sim.target(ids[1])
    c.launch(
        t2,
        pod(sh("main", "x"), annotations={"sim.vkec2.io/run-seconds": "0.2", "sim.vkec2.io/exit-code": "2"}),
    )

    def crash_looping() -> bool:
        cs = c.status(t2).container_statuses[0]
        return bool(cs["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff")

    wait_until(crash_looping, 5, "simulated CrashLoopBackOff")
    assert c.status(t2).container_statuses[0]["lastState"]["terminated"]["exitCode"] == 2
    assert c.status(sim.target(ids[2])).phase == ""

    # A terminated instance's agent disappears.
    ec2.terminate_instances(InstanceIds=[ids[2]])
    wait_until(lambda: not c.serving(sim.target(ids[2])), 10, "terminated instance unreachable")


def test_boot_delay(moto: tuple[str, Any], start_sim: Callable[..., Sim]) -> None:
    _, ec2 = moto
    sim = start_sim("--boot-delay", "4")
    (iid,) = run_instances(ec2)
    started = time.monotonic()
    seen: list[str] = []

    def booting() -> bool:
        # Right after RunInstances the simulator may not have seen the instance yet (its
        # negative cache): that is UNAVAILABLE too. Then it is seen, but still booting.
        try:
            sim.client.status(sim.target(iid))
        except AgentUnavailable as exc:
            seen.append(exc.message)
            return "still booting" in exc.message
        return False

    wait_until(booting, 3, "the instance seen, booting")
    assert all("still booting" in m or "no running instance" in m for m in seen)
    assert not sim.client.serving(sim.target(iid))
    wait_until(lambda: sim.client.serving(sim.target(iid)), 15, "agent booted")
    assert time.monotonic() - started >= 2  # LaunchTime has one-second precision


def _sim_stub(sim: Sim) -> Any:
    return simulation_grpc.SimulationStub(sim.channel)


def test_forced_states(moto: tuple[str, Any], start_sim: Callable[..., Sim]) -> None:
    _, ec2 = moto
    (iid,) = run_instances(ec2)
    sim = start_sim()
    t = sim.target(iid)
    md = (("x-vkec2-instance-id", iid),)
    c = sim.client
    wait_until(lambda: c.serving(t), 10, "virtual agent")
    c.launch(t, pod(sh("main", "x")))
    stub = _sim_stub(sim)

    stub.SetApplicationState(
        simulation_pb2.SetApplicationStateRequest(
            state=simulation_pb2.FORCED_STATE_FAILED, exit_code=3, message="disk on fire"
        ),
        metadata=md,
        timeout=5,
    )
    st = c.status(t)
    assert st.phase == "Failed" and st.message == "disk on fire"
    assert st.container_statuses[0]["state"]["terminated"]["exitCode"] == 3

    stub.SetApplicationState(
        simulation_pb2.SetApplicationStateRequest(state=simulation_pb2.FORCED_STATE_UNKNOWN),
        metadata=md,
        timeout=5,
    )
    assert c.status(t).phase == "Unknown"

    stub.SetApplicationState(
        simulation_pb2.SetApplicationStateRequest(state=simulation_pb2.FORCED_STATE_NOT_SERVING),
        metadata=md,
        timeout=5,
    )
    assert not c.serving(t)
    with pytest.raises(AgentUnavailable, match="not serving"):
        c.status(t)

    stub.SetApplicationState(simulation_pb2.SetApplicationStateRequest(delay_ms=400), metadata=md, timeout=5)
    began = time.monotonic()
    assert c.status(t).phase == "Running"
    assert time.monotonic() - began >= 0.4

    stub.SetApplicationState(
        simulation_pb2.SetApplicationStateRequest(no_answer=True), metadata=md, timeout=5
    )
    slow = AgentClient(fast_conn(sim.port, call_timeout_seconds=0.5))
    with pytest.raises(AgentUnavailable, match="DEADLINE_EXCEEDED"):
        slow.status(t)
    slow.close()

    state = stub.ClearApplicationState(simulation_pb2.ClearApplicationStateRequest(), metadata=md, timeout=5)
    assert state.state == simulation_pb2.FORCED_STATE_UNSPECIFIED and not state.no_answer
    assert c.status(t).phase == "Running"


def _shape(st: Any) -> tuple[Any, ...]:
    return (
        st.phase,
        st.reason,
        tuple((c["name"], tuple(c["state"]), c["restartCount"], c["ready"]) for c in st.container_statuses),
    )


def test_random_statuses_are_reproducible(moto: tuple[str, Any], start_sim: Callable[..., Sim]) -> None:
    _, ec2 = moto
    a, b = run_instances(ec2, 2)
    sim = start_sim()
    c = sim.client
    sequences = []
    for iid in (a, b):
        t = sim.target(iid)
        wait_until(functools.partial(c.serving, t), 10, "virtual agent")
        c.launch(t, pod(sh("main", "x"), sh("side", "y")))
        _sim_stub(sim).SetRandomStatus(
            simulation_pb2.SetRandomStatusRequest(enabled=True, seed=7),
            metadata=(("x-vkec2-instance-id", iid),),
            timeout=5,
        )
        sequences.append([_shape(c.status(t)) for _ in range(8)])
    assert sequences[0] == sequences[1]
    assert len({s[0] for s in sequences[0]}) > 1  # it does vary


def test_random_pod_status_generator() -> None:
    now = 1_700_000_000.0
    first = [random_pod_status(random.Random(42), ["a", "b"], ["init"], now=now) for _ in range(2)]
    assert first[0].signature() == first[1].signature()
    rng = random.Random(1)
    for _ in range(200):
        st = random_pod_status(rng, ["a", "b", "c"], now=now)
        states = [type(c.state).__name__ for c in st.statuses]
        if st.phase == "Succeeded":
            assert all(s == "Terminated" for s in states)
            assert all(c.state.exit_code == 0 for c in st.statuses)  # type: ignore[union-attr]
        if st.phase == "Running":
            assert "Running" in states
        if st.phase == "Failed":
            assert any(c.state.exit_code != 0 for c in st.statuses)  # type: ignore[union-attr]


def test_process_runtime_in_simulator(
    moto: tuple[str, Any], start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    _, ec2 = moto
    (iid,) = run_instances(ec2)
    sim = start_sim("--runtime", "process", "--log-dir", str(tmp_path))
    t = sim.target(iid)
    wait_until(lambda: sim.client.serving(t), 10, "virtual agent")
    sim.client.launch(t, pod(sh("main", "echo really-ran-$POD"), restart_policy="Never"))
    wait_until(lambda: sim.client.status(t).phase == "Succeeded", 10, "process finished")
    assert b"".join(sim.client.logs(t, "main")) == b"really-ran-\n"
