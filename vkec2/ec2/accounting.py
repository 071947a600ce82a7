"""Accounting of every EC2 API call, hooked into the event system of the gateway's boto3 client.

:class:`CallAccounting` registers four botocore event handlers on an EC2 client, so it sees each
call the fleet makes, whatever code path made it, and each HTTP attempt botocore sends for it
(first attempts and retries alike). Before every attempt (``request-created``, ahead of botocore's
signer) it draws a token from the fleet-wide rate limiter (:mod:`vkec2.ec2.ratelimit`), which may
sleep or refuse the call as throttled; after every attempt (``needs-retry``) it counts a throttled
answer in Redis (``ec2:throttled_attempts``); after the call (``after-call``, or
``after-call-error`` when no answer came) it counts the call once, by action and outcome, in
Prometheus (``vkec2_ec2_calls_total``, with the RunInstances latency and the launched and terminated
instances) and in Redis (``ec2:calls``, ``ec2:throttles``, read by the status log). A call the
limiter refused never reached EC2: it is counted in Prometheus as ``rate_limited`` only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from vkec2.errors import Ec2Error
from vkec2.observability import metrics

if TYPE_CHECKING:
    from botocore.hooks import BaseEventHooks

    from vkec2.store.redis_store import Store

THROTTLE_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException"})

#: Outcomes of a call, the ``outcome`` label of ``vkec2_ec2_calls_total``.
OK, THROTTLED, ERROR, UNREACHABLE, RATE_LIMITED = "ok", "throttled", "error", "unreachable", "rate_limited"

_SENT_AT = "vkec2_sent_at"  # request context key: when the first attempt left (after its token)


def _action(event_name: str) -> str:
    """``after-call.ec2.RunInstances`` -> ``RunInstances``."""
    return event_name.rsplit(".", 1)[-1]


def _error_code(parsed: Any) -> str:
    if isinstance(parsed, Mapping):
        return str(parsed.get("Error", {}).get("Code", ""))
    return ""


class CallAccounting:
    """Rate limiting and call counting of one EC2 client; ``store`` and ``limiter`` are optional."""

    def __init__(self, store: Store | None = None, limiter: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.limiter = limiter

    def register(self, events: BaseEventHooks, service: str = "ec2") -> None:
        """Hook this accounting into a client's event system (``client.meta.events``)."""
        events.register_first(f"request-created.{service}", self._before_attempt)
        events.register(f"needs-retry.{service}", self._after_attempt)
        events.register(f"after-call.{service}", self._after_call)
        events.register(f"after-call-error.{service}", self._after_call_error)

    def _before_attempt(self, request: Any, event_name: str = "", **_: Any) -> None:
        if self.limiter is not None:
            self.limiter(_action(event_name))  # may sleep, or raise Ec2Error (refused)
        context = getattr(request, "context", None)
        if isinstance(context, dict):
            context.setdefault(_SENT_AT, time.monotonic())

    def _after_attempt(self, response: Any = None, event_name: str = "", **_: Any) -> None:
        if self.store is None or not isinstance(response, tuple) or len(response) != 2:
            return  # no answer (a connection error) or no store to count in
        if _error_code(response[1]) in THROTTLE_CODES:
            self.store.count_throttled_attempt(_action(event_name))

    def _after_call(
        self,
        http_response: Any = None,
        parsed: Any = None,
        context: Any = None,
        event_name: str = "",
        **_: Any,
    ) -> None:
        outcome = OK
        if int(getattr(http_response, "status_code", 200)) >= 300:
            outcome = THROTTLED if _error_code(parsed) in THROTTLE_CODES else ERROR
        self._count(_action(event_name), outcome, context, parsed)

    def _after_call_error(
        self, exception: BaseException | None = None, context: Any = None, event_name: str = "", **_: Any
    ) -> None:
        outcome = RATE_LIMITED if isinstance(exception, Ec2Error) else UNREACHABLE
        self._count(_action(event_name), outcome, context, None)

    def _count(self, action: str, outcome: str, context: Any, parsed: Any) -> None:
        sent_at = context.get(_SENT_AT) if isinstance(context, Mapping) else None
        seconds = time.monotonic() - sent_at if isinstance(sent_at, float) else None
        metrics.ec2_call(action, outcome, seconds, parsed if isinstance(parsed, Mapping) else None)
        if self.store is not None and outcome != RATE_LIMITED:
            self.store.count_ec2_call(action, throttled=outcome == THROTTLED)
