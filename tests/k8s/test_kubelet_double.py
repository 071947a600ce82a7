"""The API double's TokenReview and SubjectAccessReview, through the official client like the producer.

What the double answers is described in tests/k8s/kubelet_double.py; these tests hold it to that.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.k8s.apiserver import FakeKubeApiServer
from tests.k8s.kubelet_double import AccessRule


@pytest.fixture
def double() -> Iterator[tuple[FakeKubeApiServer, Any, Any]]:
    with FakeKubeApiServer() as server:
        cfg = k8s.Configuration()
        cfg.host = server.url
        api_client = k8s.ApiClient(cfg)
        yield server, k8s.AuthenticationV1Api(api_client), k8s.AuthorizationV1Api(api_client)
        api_client.close()


def _sar(user: str | None = "alice", groups: list[str] | None = None, **attrs: Any) -> Any:
    resource = k8s.V1ResourceAttributes(resource="nodes", name="vk-0", **attrs) if attrs else None
    return k8s.V1SubjectAccessReview(
        spec=k8s.V1SubjectAccessReviewSpec(user=user, groups=groups, resource_attributes=resource)
    )


def test_token_reviews(double: tuple[FakeKubeApiServer, Any, Any]) -> None:
    server, authn, _ = double
    server.auth.tokens["t1"] = {"username": "alice", "uid": "u1", "groups": ["devs"], "extra": {"k": ["v"]}}
    known = authn.create_token_review(k8s.V1TokenReview(spec=k8s.V1TokenReviewSpec(token="t1"))).status
    assert known.authenticated and known.user.username == "alice" and known.user.groups == ["devs"]
    assert known.user.extra == {"k": ["v"]}
    unknown = authn.create_token_review(k8s.V1TokenReview(spec=k8s.V1TokenReviewSpec(token="t2"))).status
    assert not unknown.authenticated and unknown.error == "invalid bearer token"
    with pytest.raises(ApiException) as exc:
        authn.create_token_review(k8s.V1TokenReview(spec=k8s.V1TokenReviewSpec(token="")))
    assert exc.value.status == 400 and "token is required" in exc.value.body
    assert [r["spec"]["token"] for r in server.auth.token_reviews] == ["t1", "t2"]


def test_access_reviews_follow_the_first_matching_rule(double: tuple[FakeKubeApiServer, Any, Any]) -> None:
    server, _, authz = double
    server.auth.rules += [
        AccessRule(allow=False, user="alice", verb="create", reason="no exec for alice"),
        AccessRule(allow=True, group="devs", subresource="proxy"),
    ]
    denied = authz.create_subject_access_review(
        _sar(groups=["devs"], verb="create", subresource="proxy")
    ).status
    assert (denied.allowed, denied.denied, denied.reason) == (False, True, "no exec for alice")
    allowed = authz.create_subject_access_review(
        _sar(groups=["devs"], verb="get", subresource="proxy")
    ).status
    assert allowed.allowed and not allowed.denied
    no_opinion = authz.create_subject_access_review(
        _sar(groups=["devs"], verb="get", subresource="log")
    ).status
    assert (no_opinion.allowed, no_opinion.denied, no_opinion.reason) == (False, None, None)
    for bad, message in [
        (_sar(user=None, verb="get"), "at least one of user or group"),
        (_sar(), "exactly one of nonResourceAttributes or resourceAttributes"),
    ]:
        with pytest.raises(ApiException) as exc:
            authz.create_subject_access_review(bad)
        assert exc.value.status == 422 and message in exc.value.body
    assert len(server.auth.access_reviews) == 3
