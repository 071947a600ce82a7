"""The one error hierarchy of the fleet: every error carries a Kubernetes-style reason.

The reason (CamelCase, like a pod status ``reason`` or an Event reason) is what reaches the pod's
status and Events through the status outbox, so an operator reading ``kubectl describe pod`` sees
what went wrong in the same words the logs use. ``retryable`` tells a task whether trying the same
step again later can help.
"""

from __future__ import annotations


class Vkec2Error(Exception):
    """Base of all vkec2 errors."""

    reason = "InternalError"
    retryable = False

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class ConfigError(Vkec2Error):
    """The configuration file or environment holds an invalid value; start-up stops."""

    reason = "InvalidConfiguration"


class InvalidPodSpec(Vkec2Error):
    """The pod itself (an annotation, a missing image, an unknown pool) cannot be launched."""

    reason = "InvalidPodSpec"


class StaleFence(Vkec2Error):
    """A state write carried a fencing token older than the record's: another task owns the pod."""

    reason = "StaleFence"
    retryable = True


class UnknownPod(Vkec2Error):
    """No pod record exists for the UID (never submitted, or already forgotten)."""

    reason = "UnknownPod"


class LockBusy(Vkec2Error):
    """Another task holds the pod's lock right now."""

    reason = "LockBusy"
    retryable = True


class Ec2Error(Vkec2Error):
    """An EC2 call failed; ``code`` is AWS's error code when there is one.

    ``capacity`` marks the answers that mean "no capacity (or quota) for this launch right now"
    (the codes are listed once, in ``vkec2.contract.CAPACITY_ERROR_CODES``): the pod waits and
    moves on to its next subnet or instance type instead of failing.
    """

    reason = "EC2Error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        reason: str | None = None,
        retryable: bool = False,
        capacity: bool = False,
    ) -> None:
        super().__init__(message, reason=reason)
        self.code = code
        self.retryable = retryable or capacity
        self.capacity = capacity


class AgentError(Vkec2Error):
    """The agent on an instance failed a call."""

    reason = "AgentError"


class AgentUnavailable(AgentError):
    """The agent could not be reached (not yet booted, network, deadline exceeded)."""

    reason = "AgentUnavailable"
    retryable = True


class AgentRejected(AgentError):
    """The agent answered and refused the request (bad pod, wrong instance, not authenticated)."""

    reason = "AgentRejected"


class AgentIdentityMismatch(AgentRejected):
    """The agent at the endpoint belongs to another instance than the one the fleet launched."""

    reason = "AgentIdentityMismatch"


class AgentBootstrapRefused(AgentRejected):
    """The fleet refused to certify an agent: bad identity document, signature or bootstrap proof."""

    reason = "AgentBootstrapRefused"


class InvalidTaskArguments(Vkec2Error):
    """A task was sent arguments it cannot take (a hand-made ``celery call``): refused, nothing done."""

    reason = "InvalidTaskArguments"
