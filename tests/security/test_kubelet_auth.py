"""Attacks on the kubelet API (port 10250), all refused: no credentials, a foreign CA, a denied token.

The server is wired as the producer wires it in Kubernetes mode (:mod:`tests.support.kubelet_auth`):
client certificates of the cluster CA and bearer tokens (TokenReview) authenticate, a
SubjectAccessReview answered by the API double authorizes each request. Also checked: the review
carries the request's user and the kubelet's verb and ``nodes`` subresource, decisions are cached
for their configured time, the caps answer 429, and the producer will not start in Kubernetes mode
without an authentication method unless given the insecure flag.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.kubelet.auth import (
    Attributes,
    StreamLimits,
    TtlCache,
    User,
    WebhookAuthorizer,
    request_attributes,
)
from producer.kubelet.wire import HttpError
from producer.options import parse_args
from tests.k8s.kubelet_double import AccessRule
from tests.support.kubelet import ws_exec
from tests.support.kubelet_auth import APISERVER_USER, NODE, SECRET, SecuredKubelet, secured_kubelet
from vkec2.ca import FleetCA

LOGS = "/containerLogs/default/web/main"
EXEC = "/exec/default/web/main?command=id&stdout=true"
TOKEN = "alice-token-0123456789"


@pytest.fixture
def kubelet(redis_url: str, tmp_path: Path) -> Iterator[SecuredKubelet]:
    with secured_kubelet(redis_url, tmp_path) as k:
        k.apiserver.auth.tokens[TOKEN] = {"username": "alice", "uid": "u-1", "groups": ["devs"]}
        yield k


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_no_credentials_get_401_for_pods_logs_and_exec_and_nothing_leaks(kubelet: SecuredKubelet) -> None:
    api = kubelet.api()
    assert api.get("/healthz") == (200, b"ok")
    for path in ("/pods", LOGS, "/exec/default/web/main?command=id&stdout=true", "/run/default/web/main"):
        status, body = api.get(path)
        assert (status, body) == (401, b"Unauthorized\n"), path
    result = ws_exec(api, EXEC)
    assert " 401 " in result.status_line and SECRET.encode() not in result.body
    for header in ("Bearer", "Bearer ", "Basic YWxpY2U6eA==", "bearer   "):
        assert api.get("/pods", headers={"Authorization": header})[0] == 401
    # Nothing was asked of the API server for a request that never authenticated.
    assert kubelet.apiserver.auth.access_reviews == []


def test_a_certificate_of_a_foreign_ca_is_refused_in_the_handshake(kubelet: SecuredKubelet) -> None:
    foreign = FleetCA.create("test cluster CA")  # same name, other key
    kubelet.apiserver.auth.rules.append(AccessRule(allow=True))
    api = kubelet.api(foreign)
    for path in ("/pods", LOGS, "/healthz"):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            api.get(path)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        ws_exec(api, EXEC)
    assert kubelet.apiserver.auth.access_reviews == []


def test_a_token_the_authorizer_denies_gets_403_for_pods_logs_and_exec(kubelet: SecuredKubelet) -> None:
    auth = kubelet.apiserver.auth
    auth.rules.append(AccessRule(allow=False, user="alice", reason="no RBAC rule"))
    api = kubelet.api()
    status, body = api.get("/pods", headers=_bearer(TOKEN))
    assert status == 403
    assert body == b"Forbidden (user=alice, verb=get, resource=nodes, subresource=pods): no RBAC rule\n"
    status, body = api.get(LOGS, headers=_bearer(TOKEN))
    assert status == 403 and b"subresource=proxy" in body
    conn = api.connect()
    conn.request("POST", EXEC, headers=_bearer(TOKEN))
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 403 and b"verb=create, resource=nodes, subresource=proxy" in body
    conn.close()
    # An unknown token is not a user at all.
    for _ in range(3):
        assert api.get("/pods", headers=_bearer("made-up"))[0] == 401
    # The reviews carried who asked and what for, as the kubelet's webhook sends them.
    review = auth.access_reviews[0]["spec"]
    assert (review["user"], review["uid"], review["groups"]) == ("alice", "u-1", ["devs"])
    assert review["resourceAttributes"] == {
        "group": "",
        "version": "v1",
        "resource": "nodes",
        "subresource": "pods",
        "name": NODE,
        "verb": "get",
    }
    assert [r["spec"]["token"] for r in auth.token_reviews] == [TOKEN, "made-up"]  # each reviewed once


def test_the_cluster_ca_certificate_is_authorized_per_subresource(kubelet: SecuredKubelet) -> None:
    auth = kubelet.apiserver.auth
    auth.rules += [
        AccessRule(allow=True, user=APISERVER_USER, subresource="pods"),
        AccessRule(allow=False, user=APISERVER_USER, subresource="proxy"),
    ]
    api = kubelet.api(kubelet.ca)
    status, body = api.get("/pods")
    assert status == 200 and b'"PodList"' in body  # allowed: the pod list, secret included, as a kubelet
    status, body = api.get(LOGS)
    assert status == 403 and body.startswith(b"Forbidden (user=kube-apiserver-kubelet-client, verb=get")
    exec_result = ws_exec(api, EXEC)
    assert " 403 " in exec_result.status_line and SECRET.encode() not in exec_result.body
    other = kubelet.api(kubelet.ca, cn="other-apiserver")  # any certificate of the CA is not enough:
    assert other.get("/pods")[0] == 403  # no rule for it, and no opinion is not an allow
    spec = auth.access_reviews[0]["spec"]
    assert (spec["user"], spec["groups"]) == (APISERVER_USER, ["vkec2"])


def test_an_allowed_token_reaches_the_pod_and_a_failing_api_server_refuses(
    kubelet: SecuredKubelet, caplog: pytest.LogCaptureFixture
) -> None:
    kubelet.apiserver.auth.rules.append(AccessRule(allow=True, user="alice"))
    api = kubelet.api()
    status, body = api.get(LOGS, headers=_bearer(TOKEN))
    assert status == 400 and b"waiting to start" in body
    kubelet.apiserver.stop()
    # Cached decisions go on serving; new questions fail closed.
    assert api.get(LOGS, headers=_bearer(TOKEN))[0] == 400
    assert api.get("/pods", headers=_bearer(TOKEN)) == (
        500,
        b"Authorization error (user=alice, verb=get, resource=nodes, subresource=pods)\n",
    )
    with caplog.at_level(logging.WARNING, logger="producer.kubelet"):
        assert api.get("/pods", headers=_bearer("another-token"))[0] == 401
    assert "TokenReview failed" in caplog.text and "another-token" not in caplog.text


def test_stream_caps_answer_429_per_client_and_in_total(redis_url: str, tmp_path: Path) -> None:
    with secured_kubelet(redis_url, tmp_path, limits=StreamLimits(per_client=1, total=2)) as k:
        k.apiserver.auth.rules.append(AccessRule(allow=True))
        alice, bob = k.api(k.ca, cn="alice"), k.api(k.ca, cn="bob")
        limits = k.server.gate.limits
        # (A served request frees its slot just after its answer is read: refusals come first.)
        with limits.hold("user alice"):
            with limits.hold("user carol"):
                status, body = bob.get("/pods")
                assert status == 429 and body == b"too many concurrent requests on this node (limit 2)\n"
            status, body = alice.get("/pods")
            assert (
                status == 429
                and body == b"too many concurrent requests from user alice (limit 1 per client)\n"
            )
            assert bob.get("/pods")[0] == 200
        assert alice.get("/pods")[0] == 200  # released


@pytest.mark.parametrize(
    ("method", "path", "verb", "sub"),
    [
        ("GET", "/pods", "get", "pods"),
        ("GET", "/pods/", "get", "pods"),
        ("GET", "/podsx", "get", "proxy"),
        ("GET", "/stats/summary", "get", "stats"),
        ("GET", "/metrics/cadvisor", "get", "metrics"),
        ("GET", "/logs/", "get", "log"),
        ("GET", "/spec/", "get", "spec"),
        ("GET", "/containerLogs/default/web/main", "get", "proxy"),
        ("GET", "/exec/default/web/main", "get", "proxy"),
        ("POST", "/exec/default/web/main", "create", "proxy"),
        ("POST", "/attach/default/web/main", "create", "proxy"),
        ("POST", "/portForward/default/web", "create", "proxy"),
        ("POST", "/run/default/web/main", "create", "proxy"),
        ("PUT", "/pods", "update", "pods"),
        ("DELETE", "/x", "delete", "proxy"),
    ],
)
def test_request_attributes_follow_the_kubelet(method: str, path: str, verb: str, sub: str) -> None:
    assert request_attributes(method, path, NODE) == Attributes(verb, sub, NODE)


class _CountingReviewer:
    def __init__(self) -> None:
        self.calls = 0
        self.allow = False

    def review_token(self, token: str) -> User | None:
        return None

    def review_access(self, user: User, attrs: Attributes) -> tuple[bool, str]:
        self.calls += 1
        return self.allow, ""


def test_decisions_are_cached_for_their_own_lifetimes() -> None:
    now = [0.0]
    reviewer = _CountingReviewer()
    authz = WebhookAuthorizer(reviewer, 300.0, 30.0, TtlCache(clock=lambda: now[0]))
    user, attrs = User("alice"), Attributes("get", "proxy", NODE)
    for _ in range(2):
        with pytest.raises(HttpError) as denied:
            authz.authorize(user, attrs)
        assert denied.value.code == 403
    assert reviewer.calls == 1
    reviewer.allow = True
    now[0] = 29.0
    with pytest.raises(HttpError):
        authz.authorize(user, attrs)  # the denial still holds
    now[0] = 30.5
    authz.authorize(user, attrs)  # asked again: allowed now
    reviewer.allow = False
    now[0] = 330.0
    authz.authorize(user, attrs)  # allowed decisions last 300 s
    assert reviewer.calls == 2
    now[0] = 331.0
    with pytest.raises(HttpError):
        authz.authorize(user, attrs)
    assert reviewer.calls == 3
    uncached = WebhookAuthorizer(reviewer, 0.0, 0.0)
    with pytest.raises(HttpError):
        uncached.authorize(user, attrs)
    with pytest.raises(HttpError):
        uncached.authorize(user, attrs)
    assert reviewer.calls == 5


def test_kubernetes_mode_refuses_to_start_without_authentication(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    with pytest.raises(SystemExit) as exc:
        parse_args(["--in-cluster"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "the kubelet API needs an authentication method in Kubernetes mode" in err
    assert "--kubelet-insecure-no-auth" in err
    assert parse_args(["--in-cluster", "--kubelet-client-ca", str(ca)]).kubelet_client_ca == str(ca)
    assert parse_args(["--in-cluster", "--kubelet-token-webhook"]).kubelet_token_webhook
    assert parse_args(["--in-cluster", "--kubelet-insecure-no-auth"]).kubelet_insecure_no_auth
    assert parse_args(["--in-cluster", "--no-kubelet"]).kubelet is False
    manifests = tmp_path / "pods"
    manifests.mkdir()
    assert parse_args(["--manifests", str(manifests)]).kubelet  # standalone: loopback, no API server
    for argv, message in [
        (["--manifests", str(manifests), "--kubelet-token-webhook"], "needs an API server"),
        (["--in-cluster", "--kubelet-insecure-no-auth", "--kubelet-token-webhook"], "choose one"),
        (
            ["--in-cluster", "--kubelet-token-webhook", "--kubelet-max-streams", "2"],
            "--kubelet-max-streams-per-client must not exceed --kubelet-max-streams",
        ),
        (
            ["--in-cluster", "--kubelet-token-webhook", "--kubelet-authz-denied-ttl", "-1"],
            "must not be negative",
        ),
    ]:
        with pytest.raises(SystemExit) as exc:
            parse_args(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
