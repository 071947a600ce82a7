"""The default chart is secure: the producer's kubelet API authenticates, NetworkPolicies guard the
kubelet port and Redis, the bundled Redis requires a password from a Secret, and agents run with
TLS. :func:`problems` checks all four on rendered objects; the tests show it finds none in the
defaults and names each one when a value or an edit takes it away, and that the generated fleet
CA and the producer's client certificate work in a real mTLS handshake.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import json
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.support.helm import (
    PREFIX,
    RELEASE,
    Helm,
    Obj,
    Objects,
    container,
    env_of,
    fleet_workloads,
    literal_env,
    pod_spec,
)
from vkec2.ca import FleetCA, agent_server_name


def _component(obj: Obj) -> str:
    return str(obj["metadata"]["labels"]["app.kubernetes.io/component"])


def _labels(component: str, release: str = RELEASE) -> dict[str, str]:
    return {
        "app.kubernetes.io/instance": release,
        "app.kubernetes.io/name": "vkec2",
        "app.kubernetes.io/component": component,
    }


def _picks(selector: Obj, labels: dict[str, str]) -> bool:
    """Whether a label selector picks a pod with ``labels``."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def _selects(policy: Obj, component: str) -> bool:
    """Whether a NetworkPolicy's podSelector picks this release's pods of ``component``."""
    return _picks(policy["spec"]["podSelector"], _labels(component))


def _rules_for(objs: Objects, component: str, port: str) -> Iterator[list[Obj]]:
    """The ``from`` peers of every ingress rule admitting ``port`` of ``component``'s pods."""
    for policy in objs.of_kind("NetworkPolicy"):
        if not _selects(policy, component):
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports is None or any(p.get("port") == port for p in ports):
                yield rule.get("from", [{}])  # no `from`: every source


def _guarded(objs: Objects, component: str) -> bool:
    return any(
        _selects(p, component) and "Ingress" in p["spec"]["policyTypes"]
        for p in objs.of_kind("NetworkPolicy")
    )


def _producer_auth(objs: Objects) -> list[str]:
    c = container(objs.get("StatefulSet", f"{PREFIX}-producer"))
    args = [str(a) for a in c.get("args", [])]
    found = []
    if "--in-cluster" not in args:
        found.append("producer auth: not in Kubernetes mode (--in-cluster), where authentication is required")
    found += [f"producer auth: insecure flag {a}" for a in args if "insecure" in a.lower()]
    mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
    for index, arg in enumerate(args):  # --kubelet-client-ca=PATH or --kubelet-client-ca PATH
        if arg == "--kubelet-client-ca" or arg.startswith("--kubelet-client-ca="):
            path = arg.partition("=")[2] or (args[index + 1] if index + 1 < len(args) else "")
            if not any(path.startswith(m.rstrip("/") + "/") for m in mounts):
                found.append(f"producer auth: the client CA {path!r} is not mounted")
    return found


def _narrow(peer: Obj) -> bool:
    """A CIDR without exceptions, or pods chosen by labels in namespaces chosen by labels."""
    if set(peer) == {"ipBlock"}:
        return "except" not in peer["ipBlock"]
    selectors = ("namespaceSelector", "podSelector")
    return set(peer) == set(selectors) and all(peer[k].get("matchLabels") for k in selectors)


def _network_policies(objs: Objects) -> list[str]:
    found = []
    if not _guarded(objs, "producer"):
        found.append("NetworkPolicy: none guards the producers")
    for peers in _rules_for(objs, "producer", "kubelet"):
        if not all(_narrow(peer) for peer in peers):
            found.append(f"NetworkPolicy: the kubelet port admits more than CIDRs and named pods: {peers}")
    if objs.maybe("Deployment", f"{PREFIX}-redis") is not None:
        if not _guarded(objs, "redis"):
            found.append("NetworkPolicy: none guards Redis")
        # Only podSelector peers (this namespace) that pick no pod of another release or component.
        strangers = [_labels("worker", "other-release"), _labels("debug"), {}]
        for peers in _rules_for(objs, "redis", "redis"):
            for peer in peers:
                if set(peer) != {"podSelector"} or any(_picks(peer["podSelector"], s) for s in strangers):
                    found.append(f"NetworkPolicy: Redis admits a peer that is not a fleet pod: {peer}")
    return found


def _redis_password(objs: Objects) -> list[str]:
    redis = objs.maybe("Deployment", f"{PREFIX}-redis")
    if redis is None:
        return []
    c = container(redis)
    ref = env_of(c).get("REDIS_PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef")
    if ref is None:
        return ["Redis password: REDIS_PASSWORD of the Redis container is not from a Secret"]
    found = []
    script = "\n".join(str(part) for part in [*c.get("command", []), *c.get("args", [])])
    if "requirepass $REDIS_PASSWORD" not in script:
        found.append("Redis password: redis-server is not given requirepass $REDIS_PASSWORD")
    secret = objs.maybe("Secret", ref["name"])
    if secret is not None and len(base64.b64decode(secret["data"].get(ref["key"], ""))) < 24:
        found.append("Redis password: the generated password is missing or short")
    for w in fleet_workloads(objs):
        env = env_of(container(w))
        if env.get("REDIS_PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef") != ref:
            found.append(f"Redis password: {w['metadata']['name']} does not read it from the Secret")
        if not env["VKEC2_REDIS_URL"].get("value", "").startswith("redis://:$(REDIS_PASSWORD)@"):
            found.append(f"Redis password: the Redis URL of {w['metadata']['name']} carries no password")
    return found


def _agent_tls(objs: Objects) -> list[str]:
    found = []
    for w in fleet_workloads(objs):
        env = literal_env(container(w))
        name = w["metadata"]["name"]
        if "VKEC2_AGENT__INSECURE_PLAINTEXT" in env:
            found.append(f"agent TLS: {name} allows plaintext agents")
        if "VKEC2_AGENT__TLS" not in env:
            found.append(f"agent TLS: {name} has no agent.tls")
            continue
        tls = json.loads(env["VKEC2_AGENT__TLS"])
        mounts = [m["mountPath"] for m in container(w).get("volumeMounts", [])]
        for path in tls.values():
            if not any(path.startswith(m + "/") for m in mounts):
                found.append(f"agent TLS: {name} does not mount {path}")
        has_key = "ca_key_file" in tls
        if has_key != (_component(w) == "worker"):
            found.append(f"agent TLS: {name} {'holds' if has_key else 'lacks'} the fleet CA key")
    return found


def problems(objs: Objects) -> list[str]:
    """Every secure default the rendered chart is missing (empty: none)."""
    return _producer_auth(objs) + _network_policies(objs) + _redis_password(objs) + _agent_tls(objs)


def test_the_default_chart_is_secure(h: Helm) -> None:
    objs = h.template()
    assert problems(objs) == []
    # Concretely: the policies exist and Redis's password is a generated Secret.
    assert {p["metadata"]["name"] for p in objs.of_kind("NetworkPolicy")} >= {
        f"{PREFIX}-producer",
        f"{PREFIX}-redis",
    }
    assert objs.get("Secret", f"{PREFIX}-redis-auth")["data"]["password"]


def _drop_env(name: str, component: str) -> Callable[[Objects], None]:
    def edit(objs: Objects) -> None:
        for w in objs.workloads():
            if _component(w) == component:
                c = container(w)
                c["env"] = [e for e in c["env"] if e["name"] != name]

    return edit


def _redis_args(objs: Objects) -> None:
    c = container(objs.get("Deployment", f"{PREFIX}-redis"))
    c["args"] = [a.replace("requirepass $REDIS_PASSWORD\n", "") for a in c["args"]]


def _open_redis_policy(objs: Objects) -> None:
    policy = objs.get("NetworkPolicy", f"{PREFIX}-redis")
    policy["spec"]["ingress"][0]["from"].append({"namespaceSelector": {}})


@pytest.mark.parametrize(
    ("sets", "edit", "expected"),
    [
        (("networkPolicy.enabled=false",), None, "NetworkPolicy: none guards the producers"),
        (("networkPolicy.enabled=false",), None, "NetworkPolicy: none guards Redis"),
        (("producer.extraArgs={--kubelet-insecure-no-auth}",), None, "producer auth: insecure flag"),
        (
            ("producer.extraArgs={--kubelet-client-ca=/nowhere/ca.crt}",),
            None,
            "the client CA '/nowhere/ca.crt' is not",
        ),
        (("agentTls.insecurePlaintext=true",), None, "allows plaintext agents"),
        ((), _drop_env("VKEC2_AGENT__TLS", "producer"), f"agent TLS: {PREFIX}-producer has no agent.tls"),
        ((), _drop_env("REDIS_PASSWORD", "redis"), "REDIS_PASSWORD of the Redis container is not from"),
        ((), _drop_env("REDIS_PASSWORD", "worker"), f"{PREFIX}-worker does not read it from the Secret"),
        ((), _redis_args, "redis-server is not given requirepass"),
        ((), _open_redis_policy, "Redis admits a peer that is not a fleet pod"),
    ],
)
def test_each_missing_safeguard_is_named(
    h: Helm, sets: tuple[str, ...], edit: Callable[[Objects], None] | None, expected: str
) -> None:
    objs = h.template(None, *sets)
    if edit is not None:
        objs = Objects(objs.text)
        edit(objs)
    found = problems(objs)
    assert any(expected in problem for problem in found), found


def test_the_kubelet_port_admits_exactly_the_control_plane_cidrs_and_metrics_server(h: Helm) -> None:
    metrics_server = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "metrics-server"}},
    }
    (default,) = _rules_for(h.template(), "producer", "kubelet")
    assert default == [metrics_server]  # default: metrics-server alone
    closed = h.template({"networkPolicy": {"kubeletFrom": []}})
    assert list(_rules_for(closed, "producer", "kubelet")) == []  # nobody
    cidrs = ["10.0.0.0/24", "fd00::/64"]
    objs = h.template({"networkPolicy": {"controlPlaneCIDRs": cidrs, "kubeletFrom": []}})
    (peers,) = _rules_for(objs, "producer", "kubelet")
    assert [ipaddress.ip_network(p["ipBlock"]["cidr"]) for p in peers] == [
        ipaddress.ip_network(c) for c in cidrs
    ]
    assert problems(objs) == []
    assert "controlPlaneCIDRs" in h.template_error(None, "networkPolicy.controlPlaneCIDRs={10.0.0.1}")


def test_existing_secrets_replace_the_generated_ones(h: Helm) -> None:
    objs = h.template(
        None,
        "redis.bundled.auth.existingSecret=my-redis",
        "redis.bundled.auth.key=pw",
        "agentTls.secretName=my-ca",
        "agentTls.producerSecretName=my-producer-cert",
        "sealing.existingSecret=my-sealing",
    )
    assert not [k for k in objs.kinds() if k[0] == "Secret" and k[1] != f"{PREFIX}-flower-auth"]
    for w in objs.workloads():
        ref = env_of(container(w))["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "my-redis", "key": "pw"}
        secrets = {v["secret"]["secretName"] for v in pod_spec(w)["volumes"] if "secret" in v}
        expected = {"producer": {"my-producer-cert"}, "redis": set()}.get(_component(w), {"my-ca"})
        assert secrets == expected, w["metadata"]["name"]
    assert problems(objs) == []
    # An operator CA the chart cannot read (no cluster) needs the producer's certificate given.
    assert "agentTls.producerSecretName" in h.template_error(None, "agentTls.secretName=my-ca")
    assert "remove one of them" in h.template_error(
        None, "agentTls.insecurePlaintext=true", "agentTls.secretName=x"
    )
    assert "agentTls.insecurePlaintext" in h.template_error(None, "config.agent.insecure_plaintext=true")


def _serve(ca: FleetCA, instance_id: str) -> tuple[grpc.Server, int]:
    issued = ca.issue_agent_server_cert(instance_id)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    creds = grpc.ssl_server_credentials(
        [(issued.key_pem, issued.cert_pem)], root_certificates=ca.cert_pem, require_client_auth=True
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    return server, port


def _check(port: int, instance_id: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> grpc.StatusCode:
    creds = grpc.ssl_channel_credentials(ca_pem, key_pem, cert_pem)
    options = [("grpc.ssl_target_name_override", agent_server_name(instance_id))]
    with grpc.secure_channel(f"127.0.0.1:{port}", creds, options=options) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        except grpc.RpcError as err:
            assert isinstance(err, grpc.Call)
            return err.code()
    return grpc.StatusCode.OK


def test_generated_ca_and_producer_certificate_work_over_mtls(h: Helm) -> None:
    objs = h.template()
    ca_data = objs.get("Secret", f"{PREFIX}-fleet-ca")["data"]
    ca = FleetCA.from_pem(base64.b64decode(ca_data["tls.crt"]), base64.b64decode(ca_data["tls.key"]))
    client = {k: base64.b64decode(v) for k, v in objs.get("Secret", f"{PREFIX}-producer-tls")["data"].items()}
    assert client["ca.crt"] == ca.cert_pem
    assert b"PRIVATE KEY" not in client["ca.crt"] + client["tls.crt"]
    # Each render of a fresh install makes its own CA (an upgrade keeps the stored one via lookup).
    other = copy.deepcopy(Objects(h.template_text()).get("Secret", f"{PREFIX}-fleet-ca")["data"])
    assert other["tls.crt"] != ca_data["tls.crt"]
    server, port = _serve(ca, "i-0abc")
    try:
        # The producer's certificate, issued by Helm, reaches an agent whose certificate the workers'
        # FleetCA issued from the same CA; a certificate of another CA is refused.
        assert (
            _check(port, "i-0abc", client["ca.crt"], client["tls.crt"], client["tls.key"])
            == grpc.StatusCode.OK
        )
        foreign = FleetCA.create().client_tls("intruder")
        code = _check(port, "i-0abc", ca.cert_pem, foreign.cert_pem, foreign.key_pem)
        assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(None)


def test_cert_manager_makes_the_ca_and_renews_the_producer_certificate(h: Helm) -> None:
    objs = h.template(None, "agentTls.certManager.enabled=true")
    assert objs.maybe("Secret", f"{PREFIX}-fleet-ca") is None
    assert objs.maybe("Secret", f"{PREFIX}-producer-tls") is None
    ca = objs.get("Certificate", f"{PREFIX}-fleet-ca")["spec"]
    assert ca["isCA"] is True and ca["secretName"] == f"{PREFIX}-fleet-ca"
    assert ca["privateKey"]["algorithm"] == "ECDSA"  # vkec2.ca loads EC keys only
    assert ca["issuerRef"] == {"name": f"{PREFIX}-selfsigned", "kind": "Issuer", "group": "cert-manager.io"}
    assert objs.get("Issuer", f"{PREFIX}-fleet-ca")["spec"] == {"ca": {"secretName": f"{PREFIX}-fleet-ca"}}
    producer = objs.get("Certificate", f"{PREFIX}-producer-tls")["spec"]
    assert producer["usages"] == ["digital signature", "client auth"] and "renewBefore" in producer
    volume = next(
        v for v in pod_spec(objs.get("StatefulSet", f"{PREFIX}-producer"))["volumes"] if "secret" in v
    )
    assert volume["secret"]["secretName"] == producer["secretName"]
    assert problems(objs) == []
    own = h.template(None, "agentTls.certManager.enabled=true", "agentTls.certManager.issuerRef.name=corp-ca")
    assert own.maybe("Issuer", f"{PREFIX}-selfsigned") is None
    assert own.get("Certificate", f"{PREFIX}-fleet-ca")["spec"]["issuerRef"]["name"] == "corp-ca"
    error = h.template_error(None, "agentTls.certManager.enabled=true", "agentTls.secretName=x")
    assert "leave agentTls.secretName empty" in error


def test_network_policies_decode_as_typed_objects(h: Helm) -> None:
    """The kubernetes client's models keep every field of the policies (a misspelt one is dropped)."""
    from kubernetes.client import ApiClient

    client = ApiClient()

    def typed_copy(obj: Obj) -> Obj:
        decoded = client._ApiClient__deserialize(obj, "V1NetworkPolicy")
        result: Obj = client.sanitize_for_serialization(decoded)
        return result

    objs = h.template({"networkPolicy": {"controlPlaneCIDRs": ["10.0.0.0/24"]}})
    policies = objs.of_kind("NetworkPolicy")
    assert len(policies) == 3
    for policy in policies:
        assert typed_copy(policy) == policy, policy["metadata"]["name"]
    typo = copy.deepcopy(policies[0])
    typo["spec"]["ingres"] = typo["spec"].pop("ingress")
    assert typed_copy(typo) != typo
