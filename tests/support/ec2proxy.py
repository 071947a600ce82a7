"""The EC2 double: an HTTP proxy in front of moto's EC2 server that makes it answer like AWS.

The fleet talks to it with the real boto3 wire (point ``aws.endpoint_url`` at :attr:`Ec2Proxy.url`).
Always on: it counts every request by ``Action`` (:attr:`~Ec2Proxy.calls`, the figure tests assert
on, "counted at the endpoint"), records every answer in :attr:`~Ec2Proxy.log` (time, action,
instance IDs named, outcome, instances launched or terminated, a launch's ClientToken, MinCount and
MaxCount), honours ``ClientToken`` on RunInstances as AWS documents it (moto ignores it: the same
token and parameters return the first answer, every instance of it, without launching again, the
same token with other parameters, another MinCount or MaxCount included, fails with
``IdempotentParameterMismatch``) and shows it in DescribeInstances, reports the instances in
:attr:`~Ec2Proxy.impaired` as failing their instance status check (moto always answers "ok"), and
refuses to terminate an instance launched with termination protection (``OperationNotPermitted``;
moto ignores ``DisableApiTermination``, a launch template's included), like AWS.

Off by default and switched on per test with an :class:`~tests.support.awslike.AwsLike`
(:data:`~tests.support.awslike.AWS_LIKE` is the realistic preset), in the order AWS would apply
them: ``RequestLimitExceeded`` (HTTP 503) at random or from AWS's request-token buckets per API,
and from its resource-token buckets (RunInstances takes one token per instance it would launch,
TerminateInstances one per instance named; a request needing more than are left is refused whole
and takes none; a ClientToken replay takes none);
a visibility lag: for ``visibility_lag`` seconds after its RunInstances answer an instance is
unknown, so any request naming it (DescribeInstances and DescribeInstanceStatus by ID, CreateTags,
TerminateInstances ...) fails whole with ``InvalidInstanceID.NotFound`` (HTTP 400) and filtered or
tag listings leave it out; capacity errors on RunInstances by instance type, subnet, zone, share
and time window (``InsufficientInstanceCapacity`` ... with AWS's status and message), or a pool of
instances that launches draw from: AWS launches as many as it can, at least ``MinCount`` and at
most ``MaxCount``, or none, so a launch the pool can only partly fill (at least ``MinCount``) gets
what is left and one below ``MinCount`` fails whole; since moto launches ``MinCount``, the double
forwards ``MinCount`` = ``MaxCount`` = the number decided (``tests/support/ec2launch.py``); instances
shown ``pending`` for ``pending_seconds`` after launch and ``shutting-down`` for
``shutting_down_seconds`` after TerminateInstances (moto's answer is rewritten, and an
``instance-state-name`` filter is applied to the rewritten states); and slow answers: an action's
answer is held back ``delays[action]`` seconds after its effect (a RunInstances replaying a known
ClientToken is answered at once, from the record of the first launch).

What it does not model: token expiry (AWS keeps tokens for at least 24 hours; here they last as
long as the proxy), per-account token scoping, tokens on APIs other than RunInstances; request
signing (it forwards the caller's headers unchanged); resource tokens of actions other than
RunInstances and TerminateInstances, tokens refunded when moto fails a launch it let through, and
bucket sharing between accounts; the lag of tag changes, of state
changes other than launch and terminate, and of instances launched outside the double; filters
other than ``instance-state-name`` on rewritten states (``instance-state-code``, and any filter of
DescribeInstanceStatus, see moto's states); terminated instances disappearing from listings about
an hour later; stop/start, hibernation and scheduled events; and ``Unsupported`` or capacity
answers on actions other than RunInstances.

Spot: a capacity rule may match Spot launches only (``CapacityRule.market``); and since moto never
interrupts a Spot instance, a test does it with :meth:`Ec2Proxy.interrupt`: the instance is
terminated in moto, shown ``shutting-down`` (for ``shutting_down_seconds``) then ``terminated``,
with ``InstanceLifecycle=spot`` and the state reason ``Server.SpotInstanceTermination``.
"""

from __future__ import annotations

import base64
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler

from tests.support import ec2wire as wire
from tests.support.awslike import (
    ERROR_STATUS,
    SPOT_TERMINATION,
    STATE_CODES,
    AwsLike,
    CapacityRule,
    Event,
    EventLog,
    Timeline,
    TokenBuckets,
    error_body,
    not_found_message,
)
from tests.support.ec2launch import Launches, Verdict, counts, fingerprint, with_count
from tests.support.hostsim import HostSim, release_answer, released_ids
from tests.support.loopback import LoopbackServer

NOT_FOUND = "InvalidInstanceID.NotFound"
_CODE = re.compile(rb"<Code>([^<]*)</Code>")


@dataclass
class Reply:
    """An answer to send: HTTP status, body and what it did."""

    status: int
    payload: bytes
    ctype: str = "text/xml"
    launched: tuple[str, ...] = ()
    terminated: tuple[str, ...] = ()

    @classmethod
    def error(cls, code: str, message: str) -> Reply:
        return cls(ERROR_STATUS.get(code, 400), error_body(code, message))

    @property
    def outcome(self) -> str:
        if self.status == 200:
            return "ok"
        match = _CODE.search(self.payload)
        return match.group(1).decode() if match else f"HTTP {self.status}"


class Ec2Proxy(LoopbackServer):
    """Start with :meth:`start`; point the fleet's ``aws.endpoint_url`` at :attr:`url`."""

    def __init__(
        self, upstream: str, *, throttle_fraction: float = 0.0, seed: int = 1, aws: AwsLike | None = None
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.calls: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.tokens: dict[str, tuple[str, bytes]] = {}
        self.token_of: dict[str, str] = {}  # instance ID -> the ClientToken that launched it
        self.impaired: set[str] = set()
        self.protected: set[str] = set()  # launched with termination protection (from a launch template)
        self.log = EventLog()
        self.timeline = Timeline()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._launch_lock = threading.Lock()  # token check, capacity, launch and record as one step
        self._zones: dict[str, str] = {}
        self.aws = AwsLike()
        self._buckets: TokenBuckets | None = None
        self._resources: TokenBuckets | None = None  # resource tokens: instances launched, terminated
        self.launches = Launches(seed)
        self.interrupted: set[str] = set()
        self.run_requests: list[wire.Params] = []  # every RunInstances as sent, parameters parsed
        self._seen: tuple[str, dict[str, str]] | None = None  # a request's path and headers, for interrupt
        self.hosts: HostSim | None = None  # Dedicated hosts as AWS runs them (tests/support/hostsim.py)
        self.console: dict[str, str] = {}  # instance ID -> its GetConsoleOutput text (moto's is fixed)
        aws = aws or AwsLike()
        self.configure(replace(aws, throttle_fraction=throttle_fraction or aws.throttle_fraction))
        super().__init__()

    # -- configuration ----------------------------------------------------------------------

    def configure(self, aws: AwsLike) -> None:
        """Behave as ``aws`` from now on (buckets start full; capacity windows and pools start now)."""
        now = time.monotonic()
        with self._lock:
            self.aws = aws
            self._buckets = TokenBuckets(aws.buckets) if aws.buckets else None
            self._resources = TokenBuckets(aws.resource_buckets) if aws.resource_buckets else None
            self.launches.reset(aws.capacity, now)

    def add_capacity(self, rule: CapacityRule) -> None:
        """Add a capacity error or pool; its window starts now."""
        self.launches.add(rule, time.monotonic())

    def interrupt(self, instance_id: str) -> None:
        """Interrupt a Spot instance as EC2 does: terminated in moto, the Spot state reason shown."""
        assert self._seen is not None, "interrupt() needs a request seen first (the caller's headers)"
        path, headers = self._seen
        body = wire.encode(
            {"Action": ["TerminateInstances"], "Version": ["2016-11-15"], "InstanceId.1": [instance_id]}
        )
        reply = self._forward(path, headers, body)
        assert reply.status == 200, reply.payload
        with self._lock:
            self.interrupted.add(instance_id)
        self.timeline.terminated([instance_id], time.monotonic(), self.aws)

    def clear_capacity(self) -> None:
        self.launches.clear()

    @property
    def throttle_fraction(self) -> float:
        return self.aws.throttle_fraction

    @throttle_fraction.setter
    def throttle_fraction(self, value: float) -> None:
        """Change only the random throttling (buckets and capacity windows carry on)."""
        with self._lock:
            self.aws = replace(self.aws, throttle_fraction=value)

    def reset_counts(self) -> None:
        with self._lock:
            self.calls.clear()
            self.throttled.clear()

    # -- answering -----------------------------------------------------------------------------

    def _throttle(self, action: str, aws: AwsLike, now: float) -> bool:
        """Count the call; True if it is answered RequestLimitExceeded."""
        with self._lock:
            self.calls[action] += 1
            throttled = bool(aws.throttle_fraction) and self._random.random() < aws.throttle_fraction
            if not throttled and self._buckets is not None:
                throttled = not self._buckets.take(action, now)
            if throttled:
                self.throttled[action] += 1
        return throttled

    def _out_of_resources(self, action: str, count: int, now: float) -> bool:
        """Take ``count`` resource tokens for ``action``; True (and counted throttled) if too few are left."""
        with self._lock:
            refused = self._resources is not None and not self._resources.take(action, now, count)
            if refused:
                self.throttled[action] += 1
        return refused

    def answer(self, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """The answer to one request, before any delay: refusals first, then moto's answer rewritten."""
        aws, now = self.aws, time.monotonic()
        params = wire.parse(body)
        sent = params  # what goes to moto (a partly fulfilled launch asks for fewer instances)
        verdict: Verdict | None = None
        action = wire.first(params, "Action", "?")
        if self._throttle(action, aws, now):
            return Reply.error("RequestLimitExceeded", "Request limit exceeded.")
        unknown = self.timeline.invisible(wire.named_instances(params), now)
        if unknown:
            return Reply.error(NOT_FOUND, not_found_message(unknown))
        if action == "TerminateInstances":
            with self._lock:
                kept = [i for i in wire.named_instances(params) if i in self.protected]
            if kept:
                return Reply.error(
                    "OperationNotPermitted",
                    f"The instance '{kept[0]}' may not be terminated. Modify its 'disableApiTermination' "
                    "instance attribute and try again.",
                )
            if self._out_of_resources(action, len(wire.named_instances(params)), now):
                return Reply.error("RequestLimitExceeded", "Request limit exceeded.")
        if action == "RunInstances":
            token = wire.first(params, "ClientToken")
            if token:
                with self._lock:
                    seen = self.tokens.get(token)
                if seen is not None:
                    if seen[0] != fingerprint(params):
                        return Reply.error(
                            "IdempotentParameterMismatch",
                            "The client token has already been used with different parameters.",
                        )
                    return Reply(
                        200, seen[1], launched=tuple(wire.Answer(seen[1]).instance_ids("instancesSet"))
                    )
            decided = self._verdict(path, headers, params, now)
            if isinstance(decided, Reply):
                return decided
            verdict = decided
            if counts(params) != (verdict.count, verdict.count):  # moto launches MinCount: ask exactly
                sent = with_count(params, verdict.count)
                body = wire.encode(sent)
        if action == "GetConsoleOutput" and wire.first(params, "InstanceId") in self.console:
            return self._console_answer(wire.first(params, "InstanceId"))
        if self.hosts is not None:
            hosted = self._hosts_answer(path, headers, action, params)
            if hosted is not None:
                return hosted
            body = wire.encode(self.hosts.forwarded(action, sent))
        states: set[str] | None = None
        if action == "DescribeInstances" and aws.rewrites_states:
            forwarded, states = wire.take_state_filter(sent)
            if states is not None:
                body = wire.encode(forwarded)
        reply = self._forward(path, headers, body)
        if reply.status != 200:
            return reply
        if verdict is not None:
            self.launches.consume(verdict, len(wire.Answer(reply.payload).instance_ids("instancesSet")))
        if action == "RunInstances" and self._protects(path, headers, params):
            with self._lock:
                self.protected.update(wire.Answer(reply.payload).instance_ids("instancesSet"))
        if self.hosts is not None:
            reply = replace(reply, payload=self.hosts.after(action, params, reply.payload))
        return self._rewrite(action, params, reply, states, aws)

    def _console_answer(self, instance_id: str) -> Reply:
        text = base64.b64encode(self.console[instance_id].encode()).decode()
        body = (
            '<GetConsoleOutputResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            f"<requestId>console</requestId><instanceId>{instance_id}</instanceId>"
            f"<timestamp>2026-01-01T00:00:00.000Z</timestamp><output>{text}</output></GetConsoleOutputResponse>"
        )
        return Reply(200, body.encode())

    def _protects(self, path: str, headers: Mapping[str, str], params: wire.Params) -> bool:
        """Whether a RunInstances launches with termination protection: its own
        ``DisableApiTermination``, else its launch template's (asked of moto, which ignores it)."""
        own = wire.first(params, "DisableApiTermination").lower()
        if own or not any(k.startswith("LaunchTemplate.") for k in params):
            return own == "true"
        query: wire.Params = {"Action": ["DescribeLaunchTemplateVersions"], "Version": ["2016-11-15"]}
        for key in ("LaunchTemplateId", "LaunchTemplateName"):
            if f"LaunchTemplate.{key}" in params:
                query[key] = params[f"LaunchTemplate.{key}"]
        query["LaunchTemplateVersion.1"] = [wire.first(params, "LaunchTemplate.Version", "$Default")]
        reply = self._forward(path, headers, wire.encode(query))
        return reply.status == 200 and b"<disableApiTermination>true</disableApiTermination>" in reply.payload

    def _hosts_answer(
        self, path: str, headers: Mapping[str, str], action: str, params: wire.Params
    ) -> Reply | None:
        """The host simulation's own answer (a refusal, a replayed token, a partial release), or None."""
        assert self.hosts is not None
        early = self.hosts.before(action, params)
        if early is not None:
            return Reply(early[0], early[1])
        if action != "ReleaseHosts":
            return None
        allowed, refused = self.hosts.refused_releases(params)
        if not refused:
            return None
        released: list[str] = []
        if allowed:
            query = {"Action": ["ReleaseHosts"], "Version": params.get("Version", ["2016-11-15"])}
            query.update({f"HostId.{n}": [h] for n, h in enumerate(allowed, start=1)})
            reply = self._forward(path, headers, wire.encode(query))
            if reply.status != 200:
                return reply
            released = released_ids(reply.payload)
        return Reply(200, release_answer(released, refused))

    def _rewrite(
        self, action: str, params: wire.Params, reply: Reply, states: set[str] | None, aws: AwsLike
    ) -> Reply:
        """moto's successful answer as AWS would give it now; launches and terminations recorded."""
        now = time.monotonic()

        def shown(iid: str, old: str) -> str:
            return self.timeline.state(iid, old, now)

        if action == "RunInstances":
            ids = wire.Answer(reply.payload).instance_ids("instancesSet")
            self.timeline.launched(ids, now + aws.delays.get(action, 0.0), aws)
            token = wire.first(params, "ClientToken")
            if token:
                with self._lock:
                    self.tokens.setdefault(token, (fingerprint(params), reply.payload))
                    self.token_of.update(dict.fromkeys(ids, token))
            return replace(reply, launched=tuple(ids))
        if action == "TerminateInstances":
            doc = wire.Answer(reply.payload)
            ids = doc.instance_ids("instancesSet")
            self.timeline.terminated(ids, now, aws)
            if aws.shutting_down_seconds > 0:
                doc.rewrite("instancesSet", "currentState", lambda i, s: True, shown, dict(STATE_CODES))
                reply = replace(reply, payload=doc.dump())
            return replace(reply, terminated=tuple(ids))
        touched = aws.visibility_lag > 0 or aws.rewrites_states
        if action == "DescribeInstances":  # with the ClientToken of each launch, as AWS answers
            doc = wire.Answer(reply.payload)
            with self._lock:
                tokens, interrupted = dict(self.token_of), set(self.interrupted)
            doc.set_text("reservationSet/item/instancesSet", "clientToken", tokens)
            wire.show_interrupted(doc, interrupted, *SPOT_TERMINATION)
            reply = replace(reply, payload=doc.dump())
        if action == "DescribeInstances" and touched:
            doc = wire.Answer(reply.payload)
            doc.rewrite(
                "reservationSet/item/instancesSet",
                "instanceState",
                lambda i, s: not self.timeline.invisible([i], now) and (states is None or s in states),
                shown,
                dict(STATE_CODES),
            )
            return replace(reply, payload=doc.dump())
        if action == "DescribeInstanceStatus" and (touched or self.impaired):
            doc = wire.Answer(reply.payload)
            every = wire.first(params, "IncludeAllInstances").lower() == "true"
            doc.rewrite(
                "instanceStatusSet",
                "instanceState",
                lambda i, s: not self.timeline.invisible([i], now) and (every or s == "running"),
                shown,
                dict(STATE_CODES),
            )
            with self._lock:
                impaired = set(self.impaired)
            doc.set_status(impaired, "instanceStatusSet", "instanceStatus/status", "impaired")
            return replace(reply, payload=doc.dump())
        return reply

    def _verdict(
        self, path: str, headers: Mapping[str, str], params: wire.Params, now: float
    ) -> Verdict | Reply:
        """How many instances a RunInstances launches (capacity rules and pools), or its refusal:
        a capacity error, or ``RequestLimitExceeded`` when the instance bucket has too few tokens."""
        verdict = Verdict(counts(params)[1])
        if not self.launches.empty:
            subnet = wire.first(params, "SubnetId") or wire.first(params, "NetworkInterface.1.SubnetId")
            zone = wire.first(params, "Placement.AvailabilityZone")
            if not zone and subnet:
                zone = self._zone_of(path, headers, subnet)
            verdict = self.launches.decide(params, zone, now)
            if verdict.refusal is not None:
                return Reply.error(*verdict.refusal)
        if self._out_of_resources("RunInstances", verdict.count, now):
            return Reply.error("RequestLimitExceeded", "Request limit exceeded.")
        return verdict

    def _zone_of(self, path: str, headers: Mapping[str, str], subnet: str) -> str:
        """The Availability Zone of ``subnet``, asked of moto once (with the caller's headers)."""
        if subnet not in self._zones:
            query = wire.encode(
                {"Action": ["DescribeSubnets"], "Version": ["2016-11-15"], "SubnetId.1": [subnet]}
            )
            reply = self._forward(path, headers, query)
            zone = ""
            if reply.status == 200:
                doc = wire.Answer(reply.payload)
                zone = doc.root.findtext(doc.q("subnetSet/item/availabilityZone")) or ""
            self._zones[subnet] = zone
        return self._zones[subnet]

    def _forward(self, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        kept = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length")}
        request = urllib.request.Request(self.upstream + path, data=body, headers=kept, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as upstream:
                return Reply(
                    upstream.status, upstream.read(), upstream.headers.get("Content-Type", "text/xml")
                )
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.read(), exc.headers.get("Content-Type", "text/xml"))

    def serve(self, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer one request: :meth:`answer` (launches serialised), the action's delay, the log entry."""
        self._seen = (path, dict(headers))
        params = wire.parse(body)
        action = wire.first(params, "Action", "?")
        if action == "RunInstances":
            with self._lock:
                self.run_requests.append(params)
        replay = False
        if action == "RunInstances":  # capacity pools and tokens are checked and used as one step
            with self._launch_lock:
                with self._lock:
                    replay = wire.first(params, "ClientToken", "") in self.tokens
                reply = self.answer(path, headers, body)
        else:
            reply = self.answer(path, headers, body)
        # A replayed ClientToken is answered from EC2's record of the first launch, not slowly.
        delay = 0.0 if replay else self.aws.delays.get(action, 0.0)
        if delay > 0 and reply.outcome != "RequestLimitExceeded":
            time.sleep(delay)
        self.log.add(
            Event(
                at=time.time(),
                action=action,
                instance_ids=tuple(wire.named_instances(params)),
                outcome=reply.outcome,
                status=reply.status,
                launched=reply.launched,
                terminated=reply.terminated,
                token=wire.first(params, "ClientToken") if action == "RunInstances" else "",
                params=tuple((k, v) for k, vs in sorted(params.items()) for v in vs)
                if action == "RunInstances"
                else (),
                min_count=counts(params)[0] if action == "RunInstances" else 0,
                max_count=counts(params)[1] if action == "RunInstances" else 0,
                replay=replay and reply.status == 200,
            )
        )
        return reply

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                reply = proxy.serve(self.path, dict(self.headers.items()), body)
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.ctype)
                    self.send_header("Content-Length", str(len(reply.payload)))
                    self.end_headers()
                    self.wfile.write(reply.payload)
                except (BrokenPipeError, ConnectionResetError):
                    # The caller timed out while a slow answer was held back: as on AWS, the
                    # effect stands and nobody hears the answer.
                    self.close_connection = True

        return Handler
