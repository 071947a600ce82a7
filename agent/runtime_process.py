"""The process runtime (the default): runs the pod's containers as real child processes on the instance.

Images are not pulled: ``image`` is only reported back in the status; ``command`` + ``args`` name
the program (see docs/agent.md). Every container start is a child process in its own session and
process group, with the spec's ``env`` (literal values, ``$(VAR)`` expansion and ``fieldRef``) and
``workingDir``, its stdout/stderr pumped into a size-bounded log. Init containers run in order; then
every app container gets a supervising thread that applies the restart policy with exponential
back-off (reason ``CrashLoopBackOff``), and runs its probes (:mod:`agent.probes`); probe events are kept
in a bounded list (:mod:`agent.events`) sent with every status. When a container's main process
exits, what is left of its process group is killed, like a container whose PID 1 exits. Terminate
sends SIGTERM to every group, waits the grace period, then SIGKILLs; every child is reaped by its
own thread, so no zombies are left. A container is :mod:`agent.process_container`, an exec session
``workingDir``, its stdout/stderr pumped into a size-bounded log. Init containers run in order;
then every app container gets a supervising thread that applies the restart policy with
exponential back-off (reason ``CrashLoopBackOff``). When a container's main process exits, what is
left of its process group is killed, like a container whose PID 1 exits. Terminate sends SIGTERM to
every group, waits the grace period, then SIGKILLs; every child is reaped by its own thread, so no
zombies are left. Volumes (emptyDir, and the configMap/secret/downwardAPI/projected files the
producer resolved) are written under ``volume_dir`` and "mounted" as symlinks at their mountPaths
under the pod's mount root (:mod:`agent.volumes`); :meth:`ProcessRuntime.update_volumes` swaps
their content. A container is :mod:`agent.process_container`, an exec session
:mod:`agent.process_exec`, the process-group plumbing :mod:`agent.process_group`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from agent.events import EventLog
from agent.logs import LogQuery, read_log
from agent.model import (
    ConditionTracker,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PodSnapshot,
    Running,
    Terminated,
    Waiting,
    derive_conditions,
    derive_phase,
)
from agent.podspec import PodSpec, container_environment, parse_pod
from agent.process_container import ProcessContainer
from agent.process_exec import ProcessExec
from agent.process_group import killpg
from agent.stats import InstanceStats
from agent.stats_linux import LinuxStats
from agent.volumes import PodVolumes, parse_files


class ProcessRuntime:
    """Runs one pod as child processes; all state behind one lock, changes signalled by a condition."""

    def __init__(
        self,
        log_dir: Path,
        *,
        pod_ip: str = "",
        host_ip: str = "",
        max_log_bytes: int = 10 * 1024 * 1024,
        backoff_base: float = 10.0,
        backoff_max: float = 300.0,
        backoff_reset: float = 600.0,
        environ: Mapping[str, str] | None = None,
        volume_dir: Path | None = None,
        mount_root: Path | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.volume_dir = volume_dir or log_dir.with_name(log_dir.name + "-volumes")
        self.mount_root = mount_root  # None: the instance's own / (one pod per instance)
        self._volumes: PodVolumes | None = None
        self.pod_ip = pod_ip
        self.host_ip = host_ip or pod_ip
        self.max_log_bytes = max_log_bytes
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.backoff_reset = backoff_reset
        self._environ = dict(os.environ if environ is None else environ)
        self.lock = threading.RLock()
        self._cond = threading.Condition(self.lock)
        self._version = 0
        self.pod: PodSpec | None = None
        self.policy = "Always"
        self._init: list[ProcessContainer] = []
        self._apps: list[ProcessContainer] = []
        self.stopping = threading.Event()
        self._terminated = False
        self._terminate_message = ""
        self._launched_at: float | None = None
        self._execs: set[ProcessExec] = set()
        self._tracker = ConditionTracker()
        self._supervisor: threading.Thread | None = None
        self._stats = LinuxStats()
        self.events = EventLog()

    # -- helpers ---------------------------------------------------------------------------
    def changed(self) -> None:
        with self._cond:
            self._version += 1
            self._cond.notify_all()

    def notify(self) -> None:
        self.changed()

    def event(self, type_: str, reason: str, message: str, container: str) -> None:
        with self.lock:
            self.events.add(type_, reason, message, container)
            self.changed()

    def base_env(self, pod: PodSpec) -> dict[str, str]:
        env = {
            k: v
            for k, v in self._environ.items()
            if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER")
        }
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        env["HOSTNAME"] = pod.name
        if self.mount_root is not None:
            env["VKEC2_MOUNT_ROOT"] = str(self._pod_root(pod))
        return env

    def _pod_root(self, pod: PodSpec) -> Path:
        return Path("/") if self.mount_root is None else self.mount_root / pod.uid.replace("/", "_")

    def _make_volumes(self, pod: PodSpec) -> PodVolumes | None:
        mounts = [m for c in (*pod.init_containers, *pod.containers) for m in c.mounts]
        if not pod.has_volumes and not mounts:
            return None
        seen: dict[str, tuple[str, str]] = {}
        for m in mounts:
            if seen.setdefault(m.mount_path, (m.volume, m.sub_path)) != (m.volume, m.sub_path):
                raise InvalidArgument(
                    f"mountPath {m.mount_path} is used for two different volumes: the process runtime "
                    "shares one file tree between the pod's containers"
                )
        vols = PodVolumes(self.volume_dir / pod.uid.replace("/", "_"), self._pod_root(pod))
        try:
            vols.setup(pod.empty_dirs, pod.volume_files)
            vols.mount(mounts)
        except OSError as exc:
            vols.remove()
            raise FailedPrecondition(f"cannot set up the pod's volumes: {exc}") from None
        except FailedPrecondition:
            vols.remove()
            raise
        return vols

    def update_volumes(self, pod_uid: str, resolved_json: str) -> list[str]:
        """New content for the running pod's volumes (atomic swap); the names of those that changed."""
        with self.lock:
            pod = self.pod
            if pod is None or self._terminated or (pod_uid and pod.uid != pod_uid):
                raise FailedPrecondition(f"pod {pod_uid} is not running on this agent")
            vols = self._volumes
        if vols is None:
            return []
        try:
            resolved = json.loads(resolved_json or "{}")
        except ValueError as exc:
            raise InvalidArgument(f"resolved_json is not valid JSON: {exc}") from None
        given = (resolved.get("volumes") if isinstance(resolved, dict) else None) or {}
        if not isinstance(given, dict):
            raise InvalidArgument("resolved_json volumes must be an object")
        fresh = {n: parse_files(given.get(n, []), f"volume {n!r}") for n in pod.volume_files}
        try:
            changed = vols.update(fresh)
        except OSError as exc:
            raise FailedPrecondition(f"cannot update the pod's volumes: {exc}") from None
        return changed

    def _all(self) -> list[ProcessContainer]:
        return [*self._init, *self._apps]

    def _find(self, name: str) -> ProcessContainer:
        pod = self.pod
        if pod is None:
            raise FailedPrecondition("no pod has been launched on this agent")
        if not name:
            if len(self._apps) == 1:
                return self._apps[0]
            raise InvalidArgument(
                f"a container name must be specified for pod {pod.name}, choose one of: "
                f"[{' '.join(pod.container_names())}]"
            )
        for c in self._all():
            if c.spec.name == name:
                return c
        names = " ".join(c.spec.name for c in self._all())
        raise NotFound(f"container {name!r} is not in pod {pod.name} (containers: [{names}])")

    # -- Runtime API -----------------------------------------------------------------------
    def launch(self, pod_json: str) -> PodSnapshot:
        pod = parse_pod(pod_json)
        for c in (*pod.init_containers, *pod.containers):
            if not c.argv:
                raise InvalidArgument(
                    f"container {c.name!r} has no command: the process runtime does not pull images, "
                    "so command (or args) must name the program to run"
                )
        with self.lock:
            if self.pod is not None:
                if self.pod.uid == pod.uid:
                    return self.snapshot()
                if not self._terminated:
                    raise FailedPrecondition(
                        f"pod {self.pod.namespace}/{self.pod.name} (uid {self.pod.uid}) is already "
                        "running on this instance; terminate it first"
                    )
                self._reset()
            self._volumes = self._make_volumes(pod)
            self.pod = pod
            self.policy = pod.restart_policy
            self._launched_at = time.time()
            self.stopping.clear()
            self._terminated = False
            self._tracker.reset()
            first = "PodInitializing" if pod.init_containers else "ContainerCreating"
            self._init = [
                ProcessContainer(self, c, True, Waiting("PodInitializing")) for c in pod.init_containers
            ]
            self._apps = [ProcessContainer(self, c, False, Waiting(first)) for c in pod.containers]
            self._supervisor = threading.Thread(target=self._supervise, name="vkec2-pod", daemon=True)
            self._supervisor.start()
            self.changed()
            return self.snapshot()

    def _reset(self) -> None:
        for c in self._all():
            for log in (c.log, c.prev_log):
                if log is not None:
                    log.remove()
        shutil.rmtree(self.log_dir, ignore_errors=True)
        self.events.clear()
        if self._volumes is not None:
            self._volumes.remove()
            self._volumes = None
        self.pod = None
        self._init, self._apps = [], []

    def _supervise(self) -> None:
        for c in self._init:
            c.thread = threading.current_thread()
            if not c.run():
                return
        with self.lock:
            if self.stopping.is_set():
                return
            for c in self._apps:
                c.thread = threading.Thread(target=c.run, name=f"vkec2-{c.spec.name}", daemon=True)
                c.thread.start()

    def snapshot(self) -> PodSnapshot:
        with self.lock:
            pod = self.pod
            if pod is None:
                return PodSnapshot(
                    reason="NotLaunched",
                    message="no pod has been launched on this agent",
                    pod_ip=self.pod_ip,
                    version=self._version,
                )
            inits = tuple(c.snapshot() for c in self._init)
            apps = tuple(c.snapshot() for c in self._apps)
            reason = message = ""
            if self._terminated:
                ok = all(isinstance(s.state, Terminated) and s.state.exit_code == 0 for s in apps)
                phase = "Succeeded" if ok else "Failed"
                reason, message = "Terminated", self._terminate_message
            else:
                phase = derive_phase(self.policy, inits, apps)
            conditions = derive_conditions(self._tracker, phase, inits, apps, self._launched_at)
            return PodSnapshot(
                phase=phase,
                conditions=conditions,
                init_statuses=inits,
                statuses=apps,
                reason=reason,
                message=message,
                pod_ip=self.pod_ip,
                start_time=self._launched_at,
                pod_uid=pod.uid,
                version=self._version,
                events=self.events.recent(),
            )

    def wait_for_change(self, version: int, timeout: float) -> None:
        with self._cond:
            if self._version == version:
                self._cond.wait(timeout)

    def _live_pids(self) -> list[int]:
        pids = [c.proc.pid for c in self._all() if c.proc is not None]
        return pids + [e.pid for e in self._execs]

    def terminate(self, grace_seconds: float) -> PodSnapshot:
        if grace_seconds < 0:
            raise InvalidArgument(f"grace_seconds must be >= 0, got {grace_seconds:g}")
        with self.lock:
            if self.pod is None or self._terminated:
                return self.snapshot()
            self.stopping.set()
            pids = self._live_pids()
            self.changed()
        for pid in pids:
            killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        with self._cond:
            while self._live_pids() and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(min(left, 0.5))
            pids = self._live_pids()
        for pid in pids:
            killpg(pid, signal.SIGKILL)
        with self._cond:
            end = time.monotonic() + 10
            while self._live_pids() and (left := end - time.monotonic()) > 0:
                self._cond.wait(min(left, 0.5))
        threads = [c.thread for c in self._all() if c.thread is not None]
        if self._supervisor is not None:
            threads.append(self._supervisor)
        for t in threads:
            if t is not threading.current_thread():
                t.join(5)
        with self.lock:
            self._terminated = True
            for c in self._all():
                if isinstance(c.state, Waiting) and isinstance(c.last_state, Terminated):
                    # A container waiting out its back-off is not restarted: its last run is final.
                    c.state, c.last_state = c.last_state, None
            killed = " (grace period expired: SIGKILL sent)" if pids else ""
            self._terminate_message = (
                f"terminated on request with a grace period of {grace_seconds:g}s{killed}"
            )
            self.changed()
            return self.snapshot()

    def logs(
        self, container: str, previous: bool, query: LogQuery, active: Callable[[], bool]
    ) -> Iterator[bytes]:
        with self.lock:
            c = self._find(container)
            assert self.pod is not None
            log = c.prev_log if previous else c.log
            if log is None:
                if previous:
                    raise FailedPrecondition(
                        f"previous terminated container {c.spec.name!r} in pod {self.pod.name!r} not found"
                    )
                st = c.state
                why = st.reason if isinstance(st, Waiting) else "not started"
                raise FailedPrecondition(
                    f"container {c.spec.name!r} in pod {self.pod.name!r} is waiting to start: {why}"
                )
        return read_log(log, query, active)

    def exec(self, container: str, command: list[str], tty: bool, stdin: bool) -> ProcessExec:
        if not command:
            raise InvalidArgument("exec needs a command")
        with self.lock:
            c = self._find(container)
            pod = self.pod
            assert pod is not None
            if not isinstance(c.state, Running) or self.stopping.is_set():
                raise FailedPrecondition(f"container {c.spec.name!r} is not running; cannot exec into it")
            env = container_environment(
                pod, c.spec, pod_ip=self.pod_ip, host_ip=self.host_ip, base=self.base_env(pod)
            )

            def done(session: ProcessExec) -> None:
                with self.lock:
                    self._execs.discard(session)
                    self._cond.notify_all()

            try:
                session = ProcessExec(command, env, c.spec.working_dir, tty, stdin, done)
            except OSError as exc:
                raise FailedPrecondition(f"exec failed to start {command[0]!r}: {exc}") from None
            if not session._exited.is_set():
                self._execs.add(session)
            return session

    def stats(self) -> InstanceStats:
        """The instance and each running container's process group, read as :mod:`agent.stats_linux` says."""
        with self.lock:
            groups = [
                (c.spec.name, c.proc.pid, c.state.started_at)
                for c in self._all()
                if isinstance(c.state, Running) and c.proc is not None
            ]
        return self._stats.read(self.log_dir if self.log_dir.exists() else None, groups)

    def close(self) -> None:
        """Agent shutdown: the workload cannot be adopted by a later agent, so it is stopped too."""
        self.terminate(5)
        with self.lock:
            if self._volumes is not None:
                self._volumes.remove()
                self._volumes = None
