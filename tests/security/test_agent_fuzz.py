"""Property-based bad input to the agent's gRPC services: no crash, a clear status, nothing leaked.

Hypothesis sends every agent RPC messages with random and garbage fields (pod JSON that is almost
a pod, random text, extreme integers, random Exec streams, random nonces and "certificates", wrong
or missing instance IDs) and raw bytes that are no protobuf at all, to a real
:class:`~agent.server.AgentServer` in this process: one serving the lifecycle (the simulated runtime,
which parses pods exactly as the process runtime does, without running anything), one in bootstrap
mode with a pinned CA and a secret. Each answer must be a success or a status other than UNKNOWN
(an exception the agent did not handle) whose details name the problem, never a traceback, a
private key or the bootstrap secret; the agent still answers its health check after each case.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.bootstrap import Identity, Trust
from agent.server import AgentServer
from agent.sim.runtime import SimOutcome, SimRuntime
from agent.v1 import agent_pb2
from agent.v1 import agent_pb2_grpc as _agent_grpc
from vkec2.ca import FleetCA

agent_grpc: Any = _agent_grpc
IID = "i-0fuzzfuzzfuzzfuzz"
CA = FleetCA.create()
SECRET = CA.bootstrap_secret("fuzz-token")
LEAKS = ("Traceback", 'File "', "PRIVATE KEY", SECRET)
REFUSED_OK = set(grpc.StatusCode) - {grpc.StatusCode.UNKNOWN, grpc.StatusCode.OK}
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Served:
    def __init__(self, server: AgentServer) -> None:
        self.server = server
        server.start()
        self.channel = grpc.insecure_channel(server.address)
        self.lifecycle = agent_grpc.ApplicationLifecycleStub(self.channel)
        self.bootstrap = agent_grpc.AgentBootstrapStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(0.2)

    def check_answer(self, call: Any) -> None:
        """Run ``call``; a refusal must have a clear status and leak nothing; the agent must live on."""
        try:
            result = call()
            if isinstance(result, Iterator):
                for _ in result:
                    pass
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
            assert code in REFUSED_OK, (code, details)
            assert details.strip(), f"{code.name} without details"
            for leak in LEAKS:
                assert leak not in details, details
        health = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def lifecycle_agent() -> Iterator[Served]:
    served = Served(
        AgentServer("127.0.0.1:0", Identity(IID), SimRuntime(SimOutcome(), pod_ip="127.0.0.1"), insecure=True)
    )
    yield served
    served.close()


@pytest.fixture(scope="module")
def bootstrap_agent() -> Iterator[Served]:
    served = Served(
        AgentServer(
            "127.0.0.1:0",
            Identity(IID),
            SimRuntime(SimOutcome(), pod_ip="127.0.0.1"),
            trust=Trust(CA.cert_pem, SECRET),
        )
    )
    yield served
    served.close()


instance_ids = st.one_of(st.just(IID), st.just(""), st.text(max_size=40))
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
container = st.fixed_dictionaries(
    {"name": st.text(max_size=20), "image": st.text(max_size=20)},
    optional={
        "command": st.lists(st.text(max_size=10), max_size=3) | json_values,
        "env": json_values,
        "ports": json_values,
        "readinessProbe": json_values,
    },
)
almost_pods = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["v1", "", "v2"]),
        "kind": st.sampled_from(["Pod", "Deployment", ""]),
        "metadata": st.fixed_dictionaries(
            {},
            optional={
                "uid": st.text(max_size=30) | json_values,
                "name": st.text(max_size=30),
                "namespace": st.text(max_size=30),
                "annotations": st.dictionaries(
                    st.text(max_size=30), st.text(max_size=30) | json_values, max_size=4
                ),
            },
        ),
        "spec": st.fixed_dictionaries(
            {},
            optional={
                "containers": st.lists(container, max_size=3) | json_values,
                "initContainers": st.lists(container, max_size=2) | json_values,
                "restartPolicy": st.sampled_from(["Always", "Never", "OnFailure", "Sometimes", ""])
                | json_values,
            },
        ),
    }
)
pod_json = st.one_of(almost_pods.map(json.dumps), json_values.map(json.dumps), st.text(max_size=200))
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def md(iid: str) -> tuple[tuple[str, str], ...]:
    return (("x-vkec2-instance-id", iid),) if iid else ()


@FUZZ
@given(body=pod_json, iid=instance_ids)
def test_launch_with_random_pods(lifecycle_agent: Served, body: str, iid: str) -> None:
    req = agent_pb2.LaunchApplicationRequest(pod_json=body)
    lifecycle_agent.check_answer(
        lambda: lifecycle_agent.lifecycle.LaunchApplication(req, metadata=md(iid), timeout=5)
    )


@FUZZ
@given(grace=int64, background=st.booleans(), iid=instance_ids)
def test_terminate_with_extreme_grace(
    lifecycle_agent: Served, grace: int, background: bool, iid: str
) -> None:
    # A long grace is asked in the background, so that the test does not wait it out.
    req = agent_pb2.TerminateApplicationRequest(grace_seconds=grace, background=background or grace > 1)
    lifecycle_agent.check_answer(
        lambda: lifecycle_agent.lifecycle.TerminateApplication(req, metadata=md(iid), timeout=5)
    )


@FUZZ
@given(
    container=st.text(max_size=30),
    tail=st.none() | int64,
    since=st.none() | int64,
    limit=st.none() | int64,
    timestamps=st.booleans(),
    previous=st.booleans(),
    iid=instance_ids,
)
def test_logs_with_random_fields(
    lifecycle_agent: Served,
    container: str,
    tail: int | None,
    since: int | None,
    limit: int | None,
    timestamps: bool,
    previous: bool,
    iid: str,
) -> None:
    req = agent_pb2.GetLogsRequest(
        container=container, follow=False, timestamps=timestamps, previous=previous
    )
    for field, value in (("tail_lines", tail), ("since_seconds", since), ("limit_bytes", limit)):
        if value is not None:
            setattr(req, field, value)
    lifecycle_agent.check_answer(lambda: lifecycle_agent.lifecycle.GetLogs(req, metadata=md(iid), timeout=5))


exec_messages = st.one_of(
    st.builds(
        lambda c, cmd, tty, stdin: agent_pb2.ExecRequest(
            start=agent_pb2.ExecStart(container=c, command=cmd, tty=tty, stdin=stdin)
        ),
        st.text(max_size=20),
        st.lists(st.text(max_size=20), max_size=4),
        st.booleans(),
        st.booleans(),
    ),
    st.binary(max_size=64).map(lambda b: agent_pb2.ExecRequest(stdin=b)),
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)).map(
        lambda wh: agent_pb2.ExecRequest(resize=agent_pb2.TerminalSize(width=wh[0], height=wh[1]))
    ),
    st.booleans().map(lambda b: agent_pb2.ExecRequest(close_stdin=b)),
    st.just(agent_pb2.ExecRequest()),
)


@FUZZ
@given(messages=st.lists(exec_messages, max_size=6), iid=instance_ids)
def test_exec_with_random_streams(lifecycle_agent: Served, messages: list[Any], iid: str) -> None:
    lifecycle_agent.check_answer(
        lambda: lifecycle_agent.lifecycle.Exec(iter(messages), metadata=md(iid), timeout=5)
    )


pem_like = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(
        lambda t: f"-----BEGIN CERTIFICATE-----\n{t}\n-----END CERTIFICATE-----\n".encode()
    ),
    st.just(CA.cert_pem),
    st.just(CA.issue_agent_server_cert(IID).cert_pem),
)


@FUZZ
@given(
    nonce=st.binary(max_size=80), cert=pem_like, chain=pem_like, iid=instance_ids, install_first=st.booleans()
)
def test_bootstrap_with_random_nonces_and_certificates(
    bootstrap_agent: Served, nonce: bytes, cert: bytes, chain: bytes, iid: str, install_first: bool
) -> None:
    stub = bootstrap_agent.bootstrap
    install = agent_pb2.LaunchAuthenticatedEndpointRequest(server_cert_pem=cert, ca_chain_pem=chain)
    csr = agent_pb2.CreateCertificateRequestRequest(nonce=nonce)
    calls = [
        lambda: stub.CreateCertificateRequest(csr, metadata=md(iid), timeout=20),
        lambda: stub.LaunchAuthenticatedEndpoint(install, metadata=md(iid), timeout=5),
    ]
    for call in reversed(calls) if install_first else calls:
        bootstrap_agent.check_answer(call)
    # No random certificate ever switches the agent out of bootstrap mode.
    assert bootstrap_agent.server.mode() == "bootstrap"


METHODS = [
    "/vkec2.agent.v1.ApplicationLifecycle/LaunchApplication",
    "/vkec2.agent.v1.ApplicationLifecycle/TerminateApplication",
    "/vkec2.agent.v1.ApplicationLifecycle/CheckApplicationHealth",
    "/vkec2.agent.v1.AgentBootstrap/GetAgentIdentity",
    "/vkec2.agent.v1.AgentBootstrap/CreateCertificateRequest",
    "/vkec2.agent.v1.AgentBootstrap/LaunchAuthenticatedEndpoint",
    "/vkec2.agent.v1.NoSuchService/Nothing",
]


@FUZZ
@given(method=st.sampled_from(METHODS), payload=st.binary(max_size=200), iid=instance_ids)
def test_raw_bytes_that_are_not_protobuf(
    lifecycle_agent: Served, bootstrap_agent: Served, method: str, payload: bytes, iid: str
) -> None:
    for served in (lifecycle_agent, bootstrap_agent):
        call: Any = served.channel.unary_unary(method)  # bytes in, bytes out: no (de)serialization
        served.check_answer(functools.partial(call, payload, metadata=md(iid), timeout=20))
    assert bootstrap_agent.server.mode() == "bootstrap"
