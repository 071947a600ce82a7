"""Property-based bad input on the kubelet API: any path, query, method and credentials.

Requests are written raw over TLS (so the path may hold anything a request line can carry:
percent-escapes of any byte, ``..``, ``//``, non-ASCII, the routes' own names in odd places) to a
kubelet API with authentication on (:mod:`tests.support.kubelet_auth`), as no client, as a token
the double allows, one it denies, or with a malformed ``Authorization`` header. Every request must
get a well-formed HTTP answer: 200 only for ``/healthz`` or an authorized ``/pods``, otherwise a
4xx with a message, never a 5xx or a traceback, and the pod's secret env value only ever in an
authorized ``/pods`` answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.k8s.kubelet_double import AccessRule
from tests.support.kubelet_auth import SECRET, SecuredKubelet, secured_kubelet

ALLOWED, DENIED = "fuzz-allowed-token", "fuzz-denied-token"
ROUTES = [
    "healthz",
    "pods",
    "containerLogs",
    "exec",
    "run",
    "attach",
    "portForward",
    "stats",
    "logs",
    "metrics",
]
NAMES = ["default", "web", "main", "nope", "..", ".", "", "%2F", "%00", "healthz"]
PARAMS = [
    "follow",
    "tailLines",
    "sinceSeconds",
    "sinceTime",
    "timestamps",
    "limitBytes",
    "previous",
    "command",
    "stdin",
    "stdout",
    "stderr",
    "tty",
    "container",
]
STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3}) ")

segment = st.one_of(
    st.sampled_from(ROUTES + NAMES),
    st.text(max_size=12).map(lambda s: quote(s, safe="")),
    st.binary(max_size=6).map(lambda b: "".join(f"%{x:02X}" for x in b)),
    st.text(alphabet="!$&'()*+,;=:@-._~%/", max_size=6),
)
path = st.lists(segment, min_size=1, max_size=6).map(lambda parts: "/" + "/".join(parts))
query = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(PARAMS), st.text(max_size=8)),
        st.one_of(
            st.sampled_from(
                ["true", "false", "0", "-1", "1", "1e9", "2024-01-01T00:00:00Z", "x" * 300, "9" * 5000]
            ),
            st.text(max_size=20),
        ),
    ),
    max_size=6,
).map(lambda pairs: urlencode(pairs))
credentials = st.sampled_from(
    [None, f"Bearer {ALLOWED}", f"Bearer {DENIED}", "Bearer", "Basic Zm9vOmJhcg==", "x"]
)
method = st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"])


@pytest.fixture
def kubelet(redis_url: str, tmp_path: Path) -> Iterator[SecuredKubelet]:
    with secured_kubelet(redis_url, tmp_path) as k:
        auth = k.apiserver.auth
        auth.tokens[ALLOWED] = {"username": "fuzz-admin", "groups": ["system:masters"]}
        auth.tokens[DENIED] = {"username": "fuzz-nobody"}
        auth.rules += [AccessRule(allow=True, user="fuzz-admin"), AccessRule(allow=False, user="fuzz-nobody")]
        yield k


def _check(k: SecuredKubelet, verb: str, target: str, authorization: str | None) -> None:
    head = f"{verb} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if authorization is not None:
        head += f"Authorization: {authorization}\r\n"
    answer = k.raw((head + "\r\n").encode())
    match = STATUS_LINE.match(answer)
    assert match, (target, answer[:200])
    code = int(match.group(1))
    body = answer.partition(b"\r\n\r\n")[2]
    bare = target.split("?")[0]
    if bare.startswith("//"):  # http.server collapses leading slashes (CPython gh-87389)
        bare = "/" + bare.lstrip("/")
    authorized = authorization == f"Bearer {ALLOWED}"
    assert b"Traceback" not in answer and b"Exception" not in answer
    if code == 200:
        stats = ("/stats/summary", "/metrics", "/metrics/resource")
        assert bare == "/healthz" or (authorized and bare in ("/pods", "/pods/", *stats)), target
    else:
        assert 400 <= code < 500, (target, answer[:300])
        assert verb == "HEAD" or body.strip(), (target, answer[:300])  # a message says why
    if SECRET.encode() in answer:
        assert code == 200 and authorized and bare in ("/pods", "/pods/"), target
    if not authorized and bare != "/healthz":
        assert code in (401, 403), (target, answer[:300])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(verb=method, target_path=path, target_query=query, authorization=credentials)
def test_any_path_and_query_gets_a_clear_answer_and_leaks_nothing(
    kubelet: SecuredKubelet, verb: str, target_path: str, target_query: str, authorization: str | None
) -> None:
    target = target_path + (f"?{target_query}" if target_query else "")
    _check(kubelet, verb, target, authorization)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(
        ["/containerLogs/default/web/main", "/exec/default/web/main", "/exec/default/x/y/main"]
    ),
    target_query=query,
    authorization=credentials,
)
def test_log_and_exec_queries_are_checked_after_authorization(
    kubelet: SecuredKubelet, route: str, target_query: str, authorization: str | None
) -> None:
    _check(kubelet, "GET", route + (f"?{target_query}" if target_query else ""), authorization)
