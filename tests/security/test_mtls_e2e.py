"""End to end with mTLS everywhere: Celery workers and the producer talk to agents only over mTLS.

Two fleets share Redis, moto and one fleet CA (their workers hold the CA key; the producer a client
certificate of its own). One runs its pods on the agent simulator serving mTLS
(``vkec2 agent-sim --tls-cert``), whose virtual agents go through the real bootstrap; the other runs
its pod on a real ``python -m agent --runtime process``, started once the pod's instance exists,
from what that instance's user data carries (the pinned fleet CA and the launch's bootstrap secret,
read back from moto) and an identity document signed with the test stand-in for AWS's key. Every
pod reaches Running through the workers' bootstrap; the real pod's log is read through the
producer's kubelet API over mTLS; plaintext is refused by both kinds of agent afterwards.
"""

from __future__ import annotations

import base64
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import grpc
import pytest

from agent.userdata import parse_trust
from agent.v1 import agent_pb2
from producer.kubelet import KubeletServer, serving_context
from tests.security.test_bootstrap_attacks import agent_grpc
from tests.support.bootstrap import BootstrapKit
from tests.support.fleet import NODE, FleetHarness, example_pod
from tests.support.kubelet import Api
from tests.support.services import ManagedProcess, free_port, port_open, wait_until
from vkec2.domain.models import Phase


@pytest.fixture
def processes() -> Iterator[list[ManagedProcess]]:
    started: list[ManagedProcess] = []
    yield started
    for proc in reversed(started):
        proc.stop()


def real_pod(name: str) -> dict[str, Any]:
    pod = example_pod(name)
    pod["spec"]["containers"] = [
        {
            "name": "main",
            "image": "busybox",
            "command": ["sh", "-c", "echo hello from the real agent; sleep 600"],
        }
    ]
    return pod


def user_data(moto_url: str, instance_id: str) -> str:
    ec2 = boto3.client("ec2", endpoint_url=moto_url, region_name="us-west-2")
    raw = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")["UserData"]["Value"]
    return base64.b64decode(raw).decode()


def test_workers_and_producer_use_mtls_with_a_real_agent_and_the_simulator(
    tmp_path: Path, redis_url: str, moto_url: str, processes: list[ManagedProcess]
) -> None:
    kit = BootstrapKit(tmp_path)
    sim, sim_endpoint, tls = kit.start_tls_sim(moto_url)
    processes.append(sim)
    on_sim = FleetHarness(tmp_path, redis_url, moto_url, sim_endpoint, {"agent": tls})
    real_port = free_port()
    on_real = FleetHarness(tmp_path, redis_url, moto_url, f"127.0.0.1:{real_port}", {"agent": tls})
    try:
        on_sim.start_worker(concurrency=2)
        on_real.start_worker(concurrency=2)
        sim_uids = [on_sim.submit(example_pod(f"sim-{n}")) for n in range(2)]
        real_uid = on_real.submit(real_pod("real"))

        # The real agent boots once its instance exists, from what the user data gave that instance.
        wait_until(lambda: bool(on_real.record(real_uid).instance_id), 60, "the real pod's instance")
        iid = on_real.record(real_uid).instance_id
        trust = parse_trust(user_data(moto_url, iid))
        assert trust is not None and trust[0] == kit.ca.cert_pem.decode()
        assert trust[1] == kit.ca.bootstrap_secret(on_real.record(real_uid).launch_token)
        boot = tmp_path / "real-agent"
        boot.mkdir()
        (boot / "fleet-ca.pem").write_text(trust[0])
        (boot / "bootstrap-secret").write_text(trust[1])
        kit.signer.write_identity_file(boot / "identity.json", iid)
        agent = ManagedProcess(
            "agent",
            [
                sys.executable, "-m", "agent",
                "--listen", f"127.0.0.1:{real_port}",
                "--runtime", "process",
                "--identity-file", str(boot / "identity.json"),
                "--fleet-ca-file", str(boot / "fleet-ca.pem"),
                "--bootstrap-secret-file", str(boot / "bootstrap-secret"),
                "--state-dir", str(boot / "state"),
                "--restart-backoff", "0.5",
            ],
        ).start()  # fmt: skip
        processes.append(agent)
        wait_until(lambda: port_open(real_port) or not agent.alive(), 20, "the real agent to listen")

        on_sim.wait_phase(sim_uids, [Phase.RUNNING], timeout=120)
        on_real.wait_phase([real_uid], [Phase.RUNNING], timeout=120)
        assert "authenticated: serving mTLS" in agent.output()
        assert not (boot / "bootstrap-secret").exists()  # one-time: gone once the material is saved

        # The producer reads the real pod's log through its kubelet API, over mTLS to the agent.
        server = KubeletServer(
            on_real.store,
            NODE,
            on_real.settings.agent,
            serving_context(NODE, addresses=("127.0.0.1",)),
            address="127.0.0.1",
            port=0,
        )
        server.start()
        try:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            api = Api(server.port, ctx)

            def logged() -> bool:
                status, body = api.get("/containerLogs/default/real/main")
                return status == 200 and b"hello from the real agent" in body

            wait_until(logged, 30, "the real pod's log through the producer")
        finally:
            server.stop()

        # Plaintext is refused by both kinds of agent now.
        for endpoint, target in (
            (f"127.0.0.1:{real_port}", iid),
            (sim_endpoint, on_sim.record(sim_uids[0]).instance_id),
        ):
            with grpc.insecure_channel(endpoint) as plain, pytest.raises(grpc.RpcError) as info:
                agent_grpc.ApplicationLifecycleStub(plain).CheckApplicationHealth(
                    agent_pb2.CheckApplicationHealthRequest(),
                    metadata=(("x-vkec2-instance-id", target),),
                    timeout=5,
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, endpoint
    finally:
        on_real.stop()
        on_sim.stop()
