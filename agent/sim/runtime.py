"""The simulated runtime: a pod whose life is a deterministic function of time, or seeded randomness.

Nothing is executed. A launched pod follows a timeline set by the runtime's defaults and the pod's
annotations (``sim.vkec2.io/start-delay-seconds``, ``run-seconds``, ``exit-code``,
``init-seconds``, ``ignore-sigterm``): init containers complete in order, app containers start,
run for ``run-seconds`` (forever when absent) and exit with ``exit-code``, then restart with
CrashLoopBackOff per the restart policy. Status is computed on demand from the clock, so one
simulator process can hold thousands of these objects at almost no cost. With random statuses on,
it reports :func:`agent.sim.random_status.random_pod_status` instead (seeded, reproducible); exec
sessions are :class:`agent.sim.exec_session.SimExec`. Resolved ConfigMap/Secret content is accepted
and kept in memory only (the parsed pod; :meth:`SimRuntime.update_volumes` records each update).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

from agent.logs import LogQuery
from agent.model import (
    ConditionTracker,
    ContainerSnapshot,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PodSnapshot,
    Running,
    State,
    Terminated,
    Waiting,
    derive_conditions,
    derive_phase,
    rfc3339_nano,
    terminated_reason,
)
from agent.podspec import PodSpec, parse_pod
from agent.sim.exec_session import SimExec
from agent.sim.random_status import random_pod_status
from agent.sim.stats import simulated_stats
from agent.stats import InstanceStats

ANNOTATION_PREFIX = "sim.vkec2.io/"
SIM_BACKOFF_SECONDS = 1.0


@dataclass(frozen=True)
class SimOutcome:
    """How a simulated pod behaves; runtime defaults, overridden per pod by annotations."""

    start_delay: float = 0.0
    run_seconds: float | None = None
    exit_code: int = 0
    init_seconds: float = 0.0
    ignore_sigterm: bool = False

    def with_annotations(self, annotations: dict[str, str] | object) -> SimOutcome:
        if not isinstance(annotations, dict):
            return self
        out = self

        def num(key: str) -> float | None:
            raw = annotations.get(ANNOTATION_PREFIX + key)
            if raw is None:
                return None
            try:
                return float(raw)
            except ValueError:
                raise InvalidArgument(
                    f"annotation {ANNOTATION_PREFIX}{key} must be a number, got {raw!r}"
                ) from None

        if (v := num("start-delay-seconds")) is not None:
            out = replace(out, start_delay=v)
        if (v := num("run-seconds")) is not None:
            out = replace(out, run_seconds=v)
        if (v := num("exit-code")) is not None:
            out = replace(out, exit_code=int(v))
        if (v := num("init-seconds")) is not None:
            out = replace(out, init_seconds=v)
        raw = annotations.get(ANNOTATION_PREFIX + "ignore-sigterm")
        if raw is not None:
            out = replace(out, ignore_sigterm=raw.lower() in ("1", "true", "yes"))
        return out


def _restarts(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


class SimRuntime:
    """One simulated pod. Cheap: a few fields and a condition variable; no threads of its own."""

    __slots__ = (
        "_cond",
        "_defaults",
        "_launched_at",
        "_outcome",
        "_pod",
        "_random",
        "_rng",
        "_seed",
        "_terminated_at",
        "_terminating",
        "_tracker",
        "_version",
        "pod_ip",
        "volume_updates",
    )

    def __init__(
        self, defaults: SimOutcome | None = None, *, pod_ip: str = "", seed: int | None = None
    ) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._defaults = defaults or SimOutcome()
        self._outcome = self._defaults
        self._pod: PodSpec | None = None
        self._launched_at = 0.0
        self._terminated_at: float | None = None
        self._terminating = False
        self._version = 0
        self._tracker = ConditionTracker()
        self._random = seed is not None
        self._seed = seed or 0
        self._rng = random.Random(self._seed)
        self.pod_ip = pod_ip
        self.volume_updates: list[dict[str, object]] = []

    # -- configuration ---------------------------------------------------------------------
    def set_random(self, enabled: bool, seed: int) -> None:
        with self._cond:
            self._random, self._seed = enabled, seed
            self._rng = random.Random(seed)
            self._version += 1
            self._cond.notify_all()

    @property
    def random_status(self) -> tuple[bool, int]:
        return self._random, self._seed

    def notify(self) -> None:
        with self._cond:
            self._version += 1
            self._cond.notify_all()

    # -- Runtime API -----------------------------------------------------------------------
    def launch(self, pod_json: str) -> PodSnapshot:
        pod = parse_pod(pod_json)
        outcome = self._defaults.with_annotations(dict(pod.annotations))
        simulated_stats(dict(pod.annotations), (), None, 0.0)  # bad usage annotations: refused now
        with self._cond:
            if self._pod is not None:
                if self._pod.uid == pod.uid:
                    return self._snapshot_locked(time.time())
                if self._terminated_at is None:
                    raise FailedPrecondition(
                        f"pod {self._pod.namespace}/{self._pod.name} (uid {self._pod.uid}) is already "
                        "running on this instance; terminate it first"
                    )
            self._pod, self._outcome = pod, outcome
            self._launched_at = time.time()
            self._terminated_at = None
            self._terminating = False
            self._tracker = ConditionTracker()
            self._version += 1
            self._cond.notify_all()
            return self._snapshot_locked(self._launched_at)

    def snapshot(self) -> PodSnapshot:
        with self._cond:
            return self._snapshot_locked(time.time())

    def wait_for_change(self, version: int, timeout: float) -> None:
        with self._cond:
            if self._version == version:
                # Time-driven transitions are not signalled: wake up often enough to see them.
                self._cond.wait(min(timeout, 0.25))

    def update_volumes(self, pod_uid: str, resolved_json: str) -> list[str]:
        """Record the new volume content in memory (nothing is written); every volume counts as changed."""
        with self._cond:
            if self._pod is None or self._terminated_at is not None or (pod_uid and self._pod.uid != pod_uid):
                raise FailedPrecondition(f"pod {pod_uid} is not running on this agent")
            try:
                resolved = json.loads(resolved_json or "{}")
            except ValueError as exc:
                raise InvalidArgument(f"resolved_json is not valid JSON: {exc}") from None
            volumes = resolved.get("volumes") if isinstance(resolved, dict) else None
            self.volume_updates.append(dict(volumes or {}))
            return sorted(n for n in (volumes or {}) if n in self._pod.volume_files)

    def terminate(self, grace_seconds: float) -> PodSnapshot:
        if grace_seconds < 0:
            raise InvalidArgument(f"grace_seconds must be >= 0, got {grace_seconds:g}")
        with self._cond:
            if self._pod is None or self._terminated_at is not None or self._terminating:
                return self._snapshot_locked(time.time())
            slow = self._outcome.ignore_sigterm
            self._terminating = True
        if slow and grace_seconds > 0:
            # The simulated workload ignores SIGTERM: it dies at the end of the grace period.
            threading.Event().wait(grace_seconds)
        with self._cond:
            self._terminating = False
            self._terminated_at = time.time()
            self._version += 1
            self._cond.notify_all()
            return self._snapshot_locked(self._terminated_at)

    def close(self) -> None:
        pass

    def stats(self) -> InstanceStats:
        """Figures that follow from the timeline (:mod:`agent.sim.stats`)."""
        with self._cond:
            now = time.time()
            if self._pod is None:
                return simulated_stats({}, (), None, now)
            snap = self._snapshot_locked(now)
            return simulated_stats(dict(self._pod.annotations), snap.statuses, self._launched_at, now)

    # -- the timeline ----------------------------------------------------------------------
    def _container_states(self, now: float) -> tuple[list[ContainerSnapshot], list[ContainerSnapshot]]:
        pod, o = self._pod, self._outcome
        assert pod is not None
        t0 = self._launched_at
        end = self._terminated_at
        t = now if end is None else min(now, end)
        inits: list[ContainerSnapshot] = []
        for i, c in enumerate(pod.init_containers):
            start, stop = t0 + i * o.init_seconds, t0 + (i + 1) * o.init_seconds
            st: State
            if t < start:
                st = Waiting("PodInitializing")
            elif t < stop and (end is None or end >= stop):
                st = Running(start) if end is None else Terminated(143, "Error", end, start, signal=15)
            else:
                st = Terminated(0, "Completed", stop, start)
            inits.append(
                ContainerSnapshot(
                    c.name,
                    c.image,
                    st,
                    ready=isinstance(st, Terminated) and st.exit_code == 0,
                    started=isinstance(st, Running),
                    container_id=f"sim://{c.name}",
                )
            )
        apps_at = t0 + len(pod.init_containers) * o.init_seconds + o.start_delay
        apps: list[ContainerSnapshot] = []
        for c in pod.containers:
            last: State | None = None
            restarts = 0
            if t < apps_at:
                st = Waiting("PodInitializing" if pod.init_containers else "ContainerCreating")
            elif o.run_seconds is None or t < apps_at + o.run_seconds:
                st = Running(apps_at)
            elif not _restarts(pod.restart_policy, o.exit_code):
                fin = apps_at + o.run_seconds
                st = Terminated(o.exit_code, terminated_reason(o.exit_code), fin, apps_at)
            else:
                cycle = o.run_seconds + SIM_BACKOFF_SECONDS
                k = int((t - apps_at) // cycle)
                within = (t - apps_at) - k * cycle
                if within < o.run_seconds:
                    restarts = k
                    prev_start = apps_at + (k - 1) * cycle
                    last = Terminated(
                        o.exit_code, terminated_reason(o.exit_code), prev_start + o.run_seconds, prev_start
                    )
                    st = Running(apps_at + k * cycle)
                else:
                    restarts = k
                    start = apps_at + k * cycle
                    last = Terminated(
                        o.exit_code, terminated_reason(o.exit_code), start + o.run_seconds, start
                    )
                    st = Waiting(
                        "CrashLoopBackOff",
                        f"back-off {SIM_BACKOFF_SECONDS:g}s restarting failed "
                        f"container={c.name} pod={pod.name}_{pod.namespace}({pod.uid})",
                    )
            if end is not None and isinstance(st, Running):
                code = 137 if o.ignore_sigterm else 0
                st = Terminated(code, terminated_reason(code), end, st.started_at, signal=9 if code else 0)
            apps.append(
                ContainerSnapshot(
                    c.name,
                    c.image,
                    st,
                    last,
                    restarts,
                    ready=isinstance(st, Running) and not self._terminating,
                    started=isinstance(st, Running),
                    container_id=f"sim://{c.name}",
                )
            )
        return inits, apps

    def _snapshot_locked(self, now: float) -> PodSnapshot:
        pod = self._pod
        if pod is None:
            return PodSnapshot(
                reason="NotLaunched",
                message="no pod has been launched on this agent",
                pod_ip=self.pod_ip,
                version=self._version,
            )
        if self._random:
            snap = random_pod_status(
                self._rng, [c.name for c in pod.containers], [c.name for c in pod.init_containers], now=now
            )
            return replace(
                snap, pod_uid=pod.uid, pod_ip=self.pod_ip, start_time=self._launched_at, version=self._version
            )
        inits, apps = self._container_states(now)
        reason = message = ""
        if self._terminated_at is not None:
            ok = all(isinstance(s.state, Terminated) and s.state.exit_code == 0 for s in apps)
            phase = "Succeeded" if ok else "Failed"
            reason, message = "Terminated", "terminated on request"
        else:
            phase = derive_phase(pod.restart_policy, inits, apps)
        conds = derive_conditions(self._tracker, phase, inits, apps, self._launched_at)
        return PodSnapshot(
            phase,
            conds,
            tuple(inits),
            tuple(apps),
            reason,
            message,
            self.pod_ip,
            self._launched_at,
            pod.uid,
            self._version,
        )

    # -- logs and exec ---------------------------------------------------------------------
    def _find(self, name: str) -> str:
        pod = self._pod
        if pod is None:
            raise FailedPrecondition("no pod has been launched on this agent")
        names = [c.name for c in (*pod.containers, *pod.init_containers)]
        if not name:
            if len(pod.containers) == 1:
                return pod.containers[0].name
            raise InvalidArgument(
                f"a container name must be specified for pod {pod.name}, choose one of: "
                f"[{' '.join(pod.container_names())}]"
            )
        if name not in names:
            raise NotFound(f"container {name!r} is not in pod {pod.name} (containers: [{' '.join(names)}])")
        return name

    def _log_lines(self, name: str, now: float) -> tuple[list[tuple[float, bytes]], bool]:
        inits, apps = self._container_states(now)
        snap = next(s for s in (*inits, *apps) if s.name == name)
        lines: list[tuple[float, bytes]] = []
        for st in (snap.last_state, snap.state):
            if isinstance(st, Running):
                lines.append((st.started_at, f"[sim] container {name} started\n".encode()))
            elif isinstance(st, Terminated):
                if st.started_at is not None:
                    lines.append((st.started_at, f"[sim] container {name} started\n".encode()))
                lines.append(
                    (st.finished_at, f"[sim] container {name} exited with code {st.exit_code}\n".encode())
                )
        return lines, isinstance(snap.state, Terminated)

    def logs(
        self, container: str, previous: bool, query: LogQuery, active: Callable[[], bool]
    ) -> Iterator[bytes]:
        with self._cond:
            name = self._find(container)
            lines, done = self._log_lines(name, time.time())
        if previous:
            raise FailedPrecondition(f"previous terminated container {name!r} not found (simulated runtime)")

        def render(items: Sequence[tuple[float, bytes]]) -> bytes:
            since = None if query.since_seconds is None else time.time() - query.since_seconds
            kept = [(ts, text) for ts, text in items if since is None or ts >= since]
            return b"".join(
                (rfc3339_nano(int(ts * 1e9)).encode() + b" " if query.timestamps else b"") + text
                for ts, text in kept
            )

        def gen() -> Iterator[bytes]:
            sent = len(lines)
            shown = (
                lines[-query.tail_lines :] if query.tail_lines else ([] if query.tail_lines == 0 else lines)
            )
            data = render(shown)
            if query.limit_bytes is not None:
                data = data[: query.limit_bytes]
            if data:
                yield data
            finished = done
            while query.follow and not finished and active():
                version = self._version
                self.wait_for_change(version, 0.5)
                with self._cond:
                    now_lines, finished = self._log_lines(name, time.time())
                new = render(now_lines[sent:])
                sent = len(now_lines)
                if new:
                    yield new

        return gen()

    def exec(self, container: str, command: list[str], tty: bool, stdin: bool) -> SimExec:
        if not command:
            raise InvalidArgument("exec needs a command")
        with self._cond:
            name = self._find(container)
            inits, apps = self._container_states(time.time())
            snap = next(s for s in (*inits, *apps) if s.name == name)
            if not isinstance(snap.state, Running):
                raise FailedPrecondition(f"container {name!r} is not running; cannot exec into it")
        return SimExec(name, command, stdin)
