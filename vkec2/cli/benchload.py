"""The pure parts of ``vkec2 bench``: pod templates rendered with a counter, the pacing bucket, the summary.

:class:`PodTemplate` renders one YAML file into N pods with Jinja2 (a sandboxed environment with
``StrictUndefined``, so a misspelt variable is an error, never an empty string). The variables are
``i`` (0-based index), ``n`` (the count), ``name`` (the pod's generated name,
``<prefix>-<run_id>-<i>``), ``run_id``, ``namespace`` and ``node`` (``""`` when none was given);
values are inserted as text, ``{{ value | tojson }}`` quotes one. Each rendered document must be one
v1 Pod with containers; the pod gets the label :data:`RUN_LABEL` naming the run (so ``bench delete``
finds exactly what it made), the namespace, and ``spec.nodeName`` when a node is given. Every
problem raises :class:`TemplateError` naming the file, the pod index and what is wrong, before
anything is created. :class:`Pacer` is a token bucket (rate, burst) on a monotonic clock that
*reserves* tokens: a caller learns how long to wait for its turn, so a schedule never drifts with the
latency of the calls it paces. :class:`Tally` collects when each pod was created and reached its
goal (Running, or gone) and what failed, and :meth:`Tally.summary` gives the figures (rate achieved,
time to all, p50/p90/p99 with nearest-rank percentiles and the slowest, failures by reason). No
library was used for the bucket and the percentiles: they are a few lines each, and the CLI must not
import ``bench/``.
"""

from __future__ import annotations

import copy
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment

#: The label every bench pod carries; its value is the run ID.
RUN_LABEL = "vkec2.io/bench-run"
#: The variables a template may use, as documented above.
VARIABLES = ("i", "n", "name", "run_id", "namespace", "node")
#: A run ID is a DNS-1123 label short enough to leave room in pod names.
RUN_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")

Obj = dict[str, Any]


class TemplateError(ValueError):
    """A template that cannot give N valid pods; the message names the file, the index and the problem."""


@dataclass(frozen=True)
class RenderOptions:
    """What the pods of one run share."""

    run_id: str
    count: int
    namespace: str | None = None  # None: the template's, else "default"
    node: str | None = None
    prefix: str = "bench"


def pod_name(prefix: str, run_id: str, index: int) -> str:
    """The generated name of pod ``index`` of a run: ``<prefix>-<run_id>-<index>``."""
    return f"{prefix}-{run_id}-{index}"


class PodTemplate:
    """One pod template file, rendered with the variables of :data:`VARIABLES`."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        env = SandboxedEnvironment(
            undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
        )
        try:
            self.template = env.from_string(text)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"{path}: template syntax error on line {exc.lineno}: {exc.message}"
            ) from None

    @classmethod
    def load(cls, path: Path) -> PodTemplate:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(f"{path}: cannot read the template: {exc}") from None
        return cls(path, text)

    def render(self, index: int, opts: RenderOptions) -> Obj:
        """Pod ``index`` of the run: rendered, parsed, checked, labelled."""
        where = f"{self.path} (pod {index})"
        name = pod_name(opts.prefix, opts.run_id, index)
        values = {
            "i": index,
            "n": opts.count,
            "name": name,
            "run_id": opts.run_id,
            "namespace": opts.namespace or "default",
            "node": opts.node or "",
        }
        try:
            text = self.template.render(values)
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"{where}: {exc.message}; the variables are {', '.join(VARIABLES)}") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{where}: {exc}") from None
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            raise TemplateError(f"{where}: the rendered text is not valid YAML: {exc}") from None
        if len(docs) != 1:
            raise TemplateError(f"{where}: the template must give exactly one YAML document, not {len(docs)}")
        return _pod(where, docs[0], name, opts)

    def render_all(self, opts: RenderOptions) -> list[Obj]:
        """Every pod of the run, checked (names unique) before anything is made."""
        pods = [self.render(i, opts) for i in range(opts.count)]
        seen: dict[tuple[str, str], int] = {}
        for index, pod in enumerate(pods):
            key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            if key in seen:
                raise TemplateError(
                    f"{self.path}: pods {seen[key]} and {index} are both named {key[0]}/{key[1]}; "
                    "use {{ name }} (or {{ i }}) in metadata.name"
                )
            seen[key] = index
        return pods


def _pod(where: str, doc: Any, name: str, opts: RenderOptions) -> Obj:
    if not isinstance(doc, dict):
        raise TemplateError(f"{where}: expected a Pod (a mapping), got {type(doc).__name__}")
    kind, version = doc.get("kind", "Pod"), doc.get("apiVersion", "v1")
    if kind != "Pod" or version != "v1":
        raise TemplateError(f"{where}: expected a v1 Pod, not {version}/{kind}")
    pod = copy.deepcopy(doc)
    pod["apiVersion"], pod["kind"] = "v1", "Pod"
    meta = pod.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise TemplateError(f"{where}: metadata must be a mapping")
    meta.setdefault("name", name)
    if not isinstance(meta["name"], str) or not _SUBDOMAIN.match(meta["name"]):
        raise TemplateError(f"{where}: metadata.name {meta['name']!r} is not a valid pod name")
    if opts.namespace is not None or not meta.get("namespace"):
        meta["namespace"] = opts.namespace or "default"
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        raise TemplateError(f"{where}: metadata.labels must be a mapping")
    meta["labels"] = {**{str(k): str(v) for k, v in labels.items()}, RUN_LABEL: opts.run_id}
    spec = pod.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list) or not spec["containers"]:
        raise TemplateError(f"{where}: spec.containers must list at least one container")
    if opts.node:
        spec["nodeName"] = opts.node
    return pod


class Pacer:
    """A token bucket that reserves: :meth:`reserve` takes a token and says how long until it is due.

    ``rate`` tokens per second (None or 0: no limit), up to ``burst`` saved; thread-safe.
    """

    def __init__(
        self, rate: float | None, burst: int = 1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate or 0.0
        self.burst = max(1, burst)
        self.clock = clock
        self._lock = threading.Lock()
        self._tokens = float(self.burst)
        self._at = clock()

    def reserve(self) -> float:
        """Take one token; the seconds to wait before using it (0 when one was saved)."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= 1.0  # may go below zero: the debt is the wait
            return max(0.0, -self._tokens / self.rate)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values``, nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class Tally:
    """When each pod was started (created, or asked to go) and reached its goal, and what failed.

    Times are ``time.monotonic()`` seconds; keys are ``namespace/name``. Thread-safe.
    """

    goal: str  # "Running" or "gone", for the summary's labels
    begun: float = field(default_factory=time.monotonic)
    started: dict[str, float] = field(default_factory=dict)
    reached: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # key -> reason
    first_call: float | None = None
    last_call: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def call(self, at_start: float, at_end: float) -> None:
        with self._lock:
            self.first_call = at_start if self.first_call is None else min(self.first_call, at_start)
            self.last_call = at_end if self.last_call is None else max(self.last_call, at_end)

    def start(self, key: str, at: float) -> None:
        with self._lock:
            self.started[key] = at

    def reach(self, key: str, at: float) -> None:
        with self._lock:
            self.reached.setdefault(key, at)
            self.failed.pop(key, None)

    def fail(self, key: str, reason: str) -> None:
        with self._lock:
            if key not in self.reached:
                self.failed[key] = reason or "Unknown"

    def summary(self, count: int, pending: dict[str, str] | None = None) -> Summary:
        """The figures; ``pending`` names pods that neither reached the goal nor failed, with their state."""
        with self._lock:
            latencies = [self.reached[k] - self.started[k] for k in self.reached if k in self.started]
            calls = len(self.started)
            span = (
                (self.last_call - self.first_call) if self.first_call is not None and self.last_call else 0.0
            )
            reasons = Counter(self.failed.values())
            for state in (pending or {}).values():
                reasons[f"not {self.goal}: {state}"] += 1
            last = max(self.reached.values(), default=None)
            return Summary(
                goal=self.goal,
                count=count,
                started=calls,
                reached=len(self.reached),
                rate=(calls / span) if span > 0 else None,
                time_to_all=(last - self.begun) if last is not None and len(self.reached) >= count else None,
                p50=percentile(latencies, 50),
                p90=percentile(latencies, 90),
                p99=percentile(latencies, 99),
                slowest=max(latencies, default=None),
                failures=dict(sorted(reasons.items())),
            )


@dataclass(frozen=True)
class Summary:
    """What one ``bench launch`` or ``bench delete`` achieved (seconds; None where not measured)."""

    goal: str
    count: int
    started: int  # created (launch), or asked to go (delete)
    reached: int  # Running (launch), or gone (delete)
    rate: float | None  # calls per second achieved
    time_to_all: float | None  # from the start to the last pod reaching the goal (all of them)
    p50: float | None
    p90: float | None
    p99: float | None
    slowest: float | None
    failures: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "goal": self.goal,
            "count": self.count,
            "started": self.started,
            "reached": self.reached,
            "rate_per_second": rounded(self.rate),
            "time_to_all_seconds": rounded(self.time_to_all),
            "p50_seconds": rounded(self.p50),
            "p90_seconds": rounded(self.p90),
            "p99_seconds": rounded(self.p99),
            "max_seconds": rounded(self.slowest),
            "failures": dict(self.failures),
        }
