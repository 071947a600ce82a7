"""The kubelet API's reviews asked of the API server: ``TokenReview`` and ``SubjectAccessReview``.

:class:`KubeReviewer` implements :class:`~producer.kubelet.auth.Reviewer` with the official
``kubernetes`` client (``authentication.k8s.io/v1`` and ``authorization.k8s.io/v1``, both
``create``, which the chart grants the producer's ClusterRole); a SubjectAccessReview carries the
request's user, UID, groups and extra and the ``nodes`` resource attributes of
:func:`~producer.kubelet.auth.request_attributes`.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s

from producer.kube import REQUEST_TIMEOUT
from producer.kubelet.auth import Attributes, User


class KubeReviewer:
    """Reviews through one ``ApiClient`` of the producer's own credentials."""

    def __init__(self, api_client: Any) -> None:
        self.authn = k8s.AuthenticationV1Api(api_client)
        self.authz = k8s.AuthorizationV1Api(api_client)

    def review_token(self, token: str) -> User | None:
        review = k8s.V1TokenReview(spec=k8s.V1TokenReviewSpec(token=token))
        result = self.authn.create_token_review(review, _request_timeout=REQUEST_TIMEOUT)
        status = result.status
        if status is None or not status.authenticated or status.user is None or not status.user.username:
            return None
        u = status.user
        return User.of(u.username, u.uid or "", u.groups or (), u.extra or {})

    def review_access(self, user: User, attrs: Attributes) -> tuple[bool, str]:
        spec = k8s.V1SubjectAccessReviewSpec(
            user=user.name,
            uid=user.uid or None,
            groups=list(user.groups) or None,
            extra={k: list(v) for k, v in user.extra} or None,
            resource_attributes=k8s.V1ResourceAttributes(
                group="",
                version="v1",
                resource=attrs.resource,
                subresource=attrs.subresource,
                name=attrs.node,
                verb=attrs.verb,
            ),
        )
        result = self.authz.create_subject_access_review(
            k8s.V1SubjectAccessReview(spec=spec), _request_timeout=REQUEST_TIMEOUT
        )
        status = result.status
        if status is None:
            return False, "no status in the SubjectAccessReview answer"
        return bool(status.allowed) and not bool(status.denied), str(status.reason or "")
