"""What makes the EC2 double behave like AWS: its settings, error answers, request buckets and event log.

:class:`AwsLike` is the per-test configuration of :class:`tests.support.ec2proxy.Ec2Proxy` (every
behaviour off by default; :data:`AWS_LIKE` is the realistic preset): a visibility lag after launch,
``pending`` and ``shutting-down`` that take time, ``RequestLimitExceeded`` by fraction or by AWS's
token buckets per API, AWS's resource-token buckets (instances launched and terminated), slow
answers per action and capacity errors (:class:`CapacityRule`, a refusal or a pool of instances).
:func:`error_body` and :data:`ERROR_STATUS` give AWS's error document and HTTP status for each code
(the messages follow the shapes AWS documents and answers; the wording of a real answer can
differ), :class:`TokenBuckets` is EC2's token-bucket algorithm (requests and resources),
:class:`Timeline` remembers when each instance was launched and terminated and derives what AWS
would show for it now, and :class:`EventLog` records every request the double answered, so a test
can assert the order of events ("the pod object was removed only after its instance was
terminated") and a benchmark can read launches per second. :func:`launch_limit_seconds` is the
least time AWS's buckets allow to launch N instances, the "limit" benchmarks compare with.

AWS's figures are those of "Request throttling for the Amazon EC2 API"
(https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html): request tokens per API
("Request token limits") and, for RunInstances and TerminateInstances, resource tokens ("Resource
token limits"): one token per instance, whatever the number of requests ("you can immediately launch
1000 instances, using any number of API requests ... After the resource token bucket is empty, you
can launch up to two instances every second").
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from xml.sax.saxutils import escape


@dataclass(frozen=True)
class Bucket:
    """A token bucket: ``size`` tokens at most, ``refill`` tokens added per second."""

    size: float
    refill: float


#: AWS's documented request-token buckets (per account and Region, each API evaluated on its own).
AWS_REQUEST_BUCKETS: Mapping[str, Bucket] = MappingProxyType(
    {
        "RunInstances": Bucket(5, 2),
        "mutating": Bucket(50, 5),
        "describe": Bucket(100, 20),
    }
)

#: AWS's documented resource-token buckets: one token per instance launched or terminated.
AWS_RESOURCE_BUCKETS: Mapping[str, Bucket] = MappingProxyType(
    {
        "RunInstances": Bucket(1000, 2),
        "TerminateInstances": Bucket(1000, 20),
    }
)

STATE_CODES: Mapping[str, int] = MappingProxyType(
    {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}
)

#: HTTP status AWS answers each error code with (capacity errors are server errors, 5xx).
ERROR_STATUS: Mapping[str, int] = MappingProxyType(
    {
        "RequestLimitExceeded": 503,
        "InsufficientInstanceCapacity": 500,
        "InsufficientHostCapacity": 500,
        "VcpuLimitExceeded": 400,
        "Unsupported": 400,
        "InvalidInstanceID.NotFound": 400,
        "IdempotentParameterMismatch": 400,
        "SpotMaxPriceTooLow": 400,
        "MaxSpotInstanceCountExceeded": 400,
    }
)
CAPACITY_CODES = frozenset(
    {"InsufficientInstanceCapacity", "InsufficientHostCapacity", "VcpuLimitExceeded", "Unsupported"}
    | {"SpotMaxPriceTooLow", "MaxSpotInstanceCountExceeded"}
)
#: The markets a :class:`CapacityRule` can narrow to (a RunInstances with Spot market options, or not).
SPOT_MARKET = "spot"
ON_DEMAND_MARKET = "on-demand"
#: What the double shows for a Spot instance it interrupted (:meth:`Ec2Proxy.interrupt`).
SPOT_TERMINATION = (
    "Server.SpotInstanceTermination",
    "Server.SpotInstanceTermination: Spot instance termination",
)


@dataclass(frozen=True)
class CapacityRule:
    """RunInstances requests this rule matches answer ``code`` instead of launching.

    ``None`` matches anything: ``instance_type``, ``subnet_id`` and ``availability_zone`` (the
    subnet's zone, or ``Placement.AvailabilityZone``) and ``market`` (``spot``: only launches with
    Spot market options; ``on-demand``: only those without) narrow it; ``fraction`` of the matching
    requests fail (drawn at random); the rule is active from ``after`` seconds after it was given to
    the double for ``lasting`` seconds (``None``: for ever).

    ``available`` (``None``: no pool) makes the rule a pool of that many instances instead of a
    refusal: while it is active, matching launches draw from it, a request gets what is left (at
    most its ``MaxCount``) if that is at least its ``MinCount`` and fails whole with ``code``
    otherwise, as AWS launches "at least MinCount, or none" (``fraction`` must stay 1).
    """

    code: str = "InsufficientInstanceCapacity"
    instance_type: str | None = None
    subnet_id: str | None = None
    availability_zone: str | None = None
    fraction: float = 1.0
    after: float = 0.0
    lasting: float | None = None
    market: str | None = None
    available: int | None = None

    def __post_init__(self) -> None:
        if self.code not in CAPACITY_CODES:
            raise ValueError(f"not a capacity error: {self.code}")
        if self.market not in (None, SPOT_MARKET, ON_DEMAND_MARKET):
            raise ValueError(f"not a market: {self.market}")
        if self.available is not None and (self.available < 0 or self.fraction != 1.0):
            raise ValueError("a capacity pool needs available >= 0 and fraction 1")

    def matches(self, instance_type: str, subnet_id: str, zone: str, market: str = ON_DEMAND_MARKET) -> bool:
        return (
            self.instance_type in (None, instance_type)
            and self.subnet_id in (None, subnet_id)
            and self.availability_zone in (None, zone)
            and self.market in (None, market)
        )

    def active(self, age: float) -> bool:
        """Whether the rule applies ``age`` seconds after it was given to the double."""
        return age >= self.after and (self.lasting is None or age < self.after + self.lasting)


@dataclass(frozen=True)
class AwsLike:
    """How much like AWS the double behaves; the defaults are moto's behaviour (all off).

    ``visibility_lag``: seconds after its RunInstances answer during which an instance is unknown
    (NotFound by ID, absent from listings). ``pending_seconds`` / ``shutting_down_seconds``: how long
    the transitional states last. ``throttle_fraction``: share of requests answered
    ``RequestLimitExceeded`` at random; ``buckets``: request-token buckets by action or class
    (``"RunInstances"``, ``"mutating"``, ``"describe"``), ``None`` for none; ``resource_buckets``:
    resource-token buckets by action (``"RunInstances"``, ``"TerminateInstances"``), one token per
    instance, a request needing more than are left refused whole, ``None`` for none. ``delays``: seconds an
    action's answer is held back (the effect happens first). ``capacity``: capacity errors.
    """

    visibility_lag: float = 0.0
    pending_seconds: float = 0.0
    shutting_down_seconds: float = 0.0
    throttle_fraction: float = 0.0
    buckets: Mapping[str, Bucket] | None = None
    resource_buckets: Mapping[str, Bucket] | None = None
    delays: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    capacity: tuple[CapacityRule, ...] = ()

    @property
    def rewrites_states(self) -> bool:
        return self.pending_seconds > 0 or self.shutting_down_seconds > 0


#: The realistic preset for end-to-end runs: 5 s lag, AWS's request and resource buckets, 2 s
#: transitions.
AWS_LIKE = AwsLike(
    visibility_lag=5.0,
    pending_seconds=2.0,
    shutting_down_seconds=2.0,
    buckets=AWS_REQUEST_BUCKETS,
    resource_buckets=AWS_RESOURCE_BUCKETS,
)

#: The default of every end-to-end fleet test (``make_fleet``): the unkind side of AWS on, milder
#: than :data:`AWS_LIKE` so the suite stays quick — a 2 s visibility lag, 1 s pending and
#: shutting-down, AWS's request and resource buckets and 5 % of requests throttled at random. A
#: test that needs moto's own behaviour says ``aws_like=False``; one that needs more says so with
#: its own preset.
E2E_DEFAULT = AwsLike(
    visibility_lag=2.0,
    pending_seconds=1.0,
    shutting_down_seconds=1.0,
    throttle_fraction=0.05,
    buckets=AWS_REQUEST_BUCKETS,
    resource_buckets=AWS_RESOURCE_BUCKETS,
)


def api_class(action: str) -> str:
    """The request-bucket class of an EC2 action (the double's own view, independent of vkec2's)."""
    if action == "RunInstances":
        return "RunInstances"
    return "describe" if action.startswith(("Describe", "Get", "List")) else "mutating"


def bucket_of(sizes: Mapping[str, Bucket], action: str) -> Bucket | None:
    """The bucket ``action`` draws from in ``sizes``: its own, else its class's, else none."""
    return sizes.get(action) or sizes.get(api_class(action))


class TokenBuckets:
    """EC2's token buckets: one per action, sized by the action or its class; a request takes
    one token (request buckets) or one per instance (resource buckets), all or none."""

    def __init__(self, sizes: Mapping[str, Bucket]) -> None:
        self.sizes = sizes
        self._levels: dict[str, tuple[float, float]] = {}  # action -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, action: str, now: float | None = None, count: int = 1) -> bool:
        """Take ``count`` tokens for ``action``; False, taking none, when fewer are left (throttled)."""
        bucket = bucket_of(self.sizes, action)
        if bucket is None or count <= 0:
            return True
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._levels.get(action, (bucket.size, now))
            tokens = min(bucket.size, tokens + (now - at) * bucket.refill)
            if tokens < count:
                self._levels[action] = (tokens, now)
                return False
            self._levels[action] = (tokens - count, now)
            return True


def error_body(code: str, message: str) -> bytes:
    """AWS's EC2 error document for ``code``."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"</Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>"
    ).encode()


def not_found_message(instance_ids: Iterable[str]) -> str:
    ids = list(instance_ids)
    if len(ids) == 1:
        return f"The instance ID '{ids[0]}' does not exist"
    return f"The instance IDs '{', '.join(ids)}' do not exist"


def capacity_message(code: str, instance_type: str, zone: str) -> str:
    """The message AWS answers a capacity error with, for ``instance_type`` in ``zone``."""
    where = f"the Availability Zone you requested ({zone})" if zone else "the Availability Zone you requested"
    if code == "InsufficientInstanceCapacity":
        return (
            f"We currently do not have sufficient {instance_type} capacity in {where}. Our system will "
            f"be working on provisioning additional capacity. You can currently get {instance_type} "
            "capacity by not specifying an Availability Zone in your request or choosing another one."
        )
    if code == "InsufficientHostCapacity":
        return f"There is not enough capacity to fulfill your Dedicated Host request for {instance_type}."
    if code == "SpotMaxPriceTooLow":
        return (
            "Your Spot request price is lower than the minimum required Spot request fulfillment "
            f"price for {instance_type}."
        )
    if code == "MaxSpotInstanceCountExceeded":
        return "Max spot instance count exceeded"
    if code == "VcpuLimitExceeded":
        return (
            "You have requested more vCPU capacity than your current vCPU limit of 0 allows for the "
            "instance bucket that the specified instance type belongs to. Please visit "
            "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit."
        )
    return (
        f"Your requested instance type ({instance_type}) is not supported in your requested "
        f"Availability Zone ({zone or 'unknown'}). Please retry your request by not specifying an "
        "Availability Zone or choosing another one."
    )


class Timeline:
    """When each instance was launched and terminated through the double, and what AWS shows now."""

    def __init__(self) -> None:
        self._visible_at: dict[str, float] = {}
        self._running_at: dict[str, float] = {}
        self._gone_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def launched(self, instance_ids: Iterable[str], answered_at: float, aws: AwsLike) -> None:
        """Instances answered by RunInstances at ``answered_at`` (a replay keeps the first times)."""
        with self._lock:
            for iid in instance_ids:
                self._visible_at.setdefault(iid, answered_at + aws.visibility_lag)
                self._running_at.setdefault(iid, answered_at + aws.pending_seconds)

    def terminated(self, instance_ids: Iterable[str], now: float, aws: AwsLike) -> None:
        with self._lock:
            for iid in instance_ids:
                self._gone_at.setdefault(iid, now + aws.shutting_down_seconds)

    def invisible(self, instance_ids: Iterable[str], now: float) -> list[str]:
        """The IDs AWS would not know yet (still within their visibility lag)."""
        with self._lock:
            return [iid for iid in instance_ids if now < self._visible_at.get(iid, now)]

    def state(self, instance_id: str, upstream: str, now: float) -> str:
        """The state AWS would show, given the state moto reports (``upstream``)."""
        with self._lock:
            if upstream == "terminated" and now < self._gone_at.get(instance_id, now):
                return "shutting-down"
            if upstream == "running" and now < self._running_at.get(instance_id, now):
                return "pending"
        return upstream


@dataclass(frozen=True)
class Event:
    """One request the double answered: wall-clock ``at``, what it named and what came of it.

    A RunInstances also records the ``min_count``/``max_count`` asked (0 for other actions) and
    whether it was a ``replay`` of a known ClientToken (its ``launched`` are the first answer's).
    """

    at: float
    action: str
    instance_ids: tuple[str, ...]
    outcome: str  # "ok" or the error code
    status: int
    launched: tuple[str, ...] = ()
    terminated: tuple[str, ...] = ()
    token: str = ""  # a RunInstances' ClientToken
    #: A RunInstances' form parameters as sent (``MetadataOptions.HttpTokens`` -> ``required``).
    params: tuple[tuple[str, str], ...] = ()
    min_count: int = 0
    max_count: int = 0
    replay: bool = False

    def param(self, key: str, default: str = "") -> str:
        """One form parameter of the request (the first value), as it reached the endpoint."""
        return next((v for k, v in self.params if k == key), default)

    def params_under(self, prefix: str) -> dict[str, str]:
        """The form parameters whose key starts with ``prefix`` (``BlockDeviceMapping.``)."""
        return {k: v for k, v in self.params if k.startswith(prefix)}


class EventLog:
    """Every request in answer order; thread-safe, read with :meth:`events` and the helpers."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def add(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

    def events(self, action: str | None = None, instance_id: str | None = None) -> list[Event]:
        """Events of ``action`` that named, launched or terminated ``instance_id`` (None: any)."""
        with self._lock:
            events = list(self._events)
        return [
            e
            for e in events
            if (action is None or e.action == action)
            and (instance_id is None or instance_id in (*e.instance_ids, *e.launched, *e.terminated))
        ]

    def launched(self) -> list[str]:
        """Every instance RunInstances answered with, first answer first (replays not repeated)."""
        return list(dict.fromkeys(i for e in self.events("RunInstances") for i in e.launched))

    def run_requests(self) -> list[Event]:
        """Every RunInstances the double answered (the request parameters are on each event)."""
        return self.events("RunInstances")

    def launched_at(self, instance_id: str) -> float | None:
        return next((e.at for e in self.events("RunInstances") if instance_id in e.launched), None)

    def terminated_at(self, instance_id: str) -> float | None:
        """When a TerminateInstances answer first reported ``instance_id`` terminating (None: never)."""
        return next((e.at for e in self.events("TerminateInstances") if instance_id in e.terminated), None)

    def outcomes(self, action: str) -> list[str]:
        return [e.outcome for e in self.events(action)]

    def instances_launched_per_second(
        self, start: float | None = None, width: float = 1.0
    ) -> list[tuple[float, float]]:
        """Instances first launched per second, in windows of ``width`` s: ``(offset from start, rate)``.

        ``start`` is a wall-clock time (default: the first RunInstances); replays are not counted.
        """
        launches = [e for e in self.events("RunInstances") if e.launched and not e.replay]
        seen: set[str] = set()
        times: list[float] = []
        for event in launches:
            fresh = [i for i in event.launched if i not in seen]
            seen.update(fresh)
            times.extend([event.at] * len(fresh))
        return _rates(times, start, width)

    def run_requests_per_second(
        self, start: float | None = None, width: float = 1.0
    ) -> list[tuple[float, float]]:
        """RunInstances requests answered per second (any outcome), in windows as
        :meth:`instances_launched_per_second`."""
        return _rates([e.at for e in self.events("RunInstances")], start, width)


def _rates(times: list[float], start: float | None, width: float) -> list[tuple[float, float]]:
    """How many ``times`` fall in each ``width``-second window from ``start``, per second."""
    if not times:
        return []
    origin = min(times) if start is None else start
    counts = [0] * (int(max(0.0, max(times) - origin) // width) + 1)
    for at in times:
        if at >= origin:
            counts[int((at - origin) // width)] += 1
    return [(n * width, c / width) for n, c in enumerate(counts)]


def launch_limit_seconds(n_instances: int, aws: AwsLike = AWS_LIKE, batch: int = 1) -> float:
    """The least time AWS's buckets in ``aws`` allow to launch ``n_instances``, ``batch`` per call.

    Both RunInstances buckets start full and every call is made as soon as both allow it: call k
    needs a request token and one instance token per instance it launches. With AWS's buckets
    (requests: burst 5, refill 2/s; instances: burst 1000, refill 2/s) and full batches this is
    ``max(0, (ceil(n/b) - 5) / 2, (n - 1000) / 2)`` seconds: 1,000 instances one per call take
    497.5 s, in batches of 100 2.5 s. Random throttling and capacity are not counted.
    """
    if n_instances <= 0:
        return 0.0
    batch = max(1, batch)
    buckets = [bucket_of(aws.buckets or {}, "RunInstances"), (aws.resource_buckets or {}).get("RunInstances")]
    levels = [b.size if b is not None else 0.0 for b in buckets]
    at, left = 0.0, n_instances
    while left > 0:
        size = min(batch, left)
        needs = (1.0, float(size))
        wait = 0.0
        for bucket, level, need in zip(buckets, levels, needs, strict=True):
            if bucket is not None and level < need:
                if need > bucket.size or bucket.refill <= 0:
                    return math.inf  # a call this large never fits the bucket
                wait = max(wait, (need - level) / bucket.refill)
        at += wait
        for i, (bucket, need) in enumerate(zip(buckets, needs, strict=True)):
            if bucket is not None:
                levels[i] = min(bucket.size, levels[i] + wait * bucket.refill) - need
        left -= size
    return at
