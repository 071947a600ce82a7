"""The process runtime (the default): runs the pod's containers as real child processes on the instance.

Images are not pulled: ``image`` is only reported back in the status; ``command`` + ``args`` name
the program (see docs/agent.md). Every container start is a child process in its own session and
process group, with the spec's ``env`` (literal values, ``$(VAR)`` expansion and ``fieldRef``) and
``workingDir``, its stdout/stderr pumped into a size-bounded log. Init containers run in order;
then every app container gets a supervising thread that applies the restart policy with
exponential back-off (reason ``CrashLoopBackOff``). When a container's main process exits, what is
left of its process group is killed, like a container whose PID 1 exits. Terminate sends SIGTERM to
every group, waits the grace period, then SIGKILLs; every child is reaped by its own thread, so no
zombies are left.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from agent.logs import ContainerLog, LogQuery, read_log
from agent.model import (
    ConditionTracker,
    ContainerSnapshot,
    ContainerSpec,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PodSnapshot,
    PodSpec,
    Running,
    State,
    Terminated,
    Waiting,
    container_environment,
    derive_conditions,
    derive_phase,
    expand_vars,
    parse_pod,
    terminated_reason,
)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _exit_code(returncode: int) -> tuple[int, int]:
    """(exit code, signal) the way container runtimes report them: 128+N when killed by signal N."""
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, 0


def _reap(proc: subprocess.Popen[bytes]) -> int:
    """Wait for the group leader, then kill whatever is left of its process group."""
    rc = proc.wait()
    _killpg(proc.pid, signal.SIGKILL)
    return rc


class _Container:
    """One container of the pod: its spec, its truthful status and its current process."""

    def __init__(self, rt: ProcessRuntime, spec: ContainerSpec, is_init: bool, initial: Waiting) -> None:
        self.rt = rt
        self.spec = spec
        self.is_init = is_init
        self.state: State = initial
        self.last_state: State | None = None
        self.restart_count = 0
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: ContainerLog | None = None
        self.prev_log: ContainerLog | None = None
        self.thread: threading.Thread | None = None

    def snapshot(self) -> ContainerSnapshot:
        st = self.state
        if self.is_init:
            ready = isinstance(st, Terminated) and st.exit_code == 0
        else:
            ready = isinstance(st, Running) and not self.rt._stopping.is_set()
        pid = self.proc.pid if self.proc is not None else None
        return ContainerSnapshot(
            name=self.spec.name,
            image=self.spec.image,
            state=st,
            last_state=self.last_state,
            restart_count=self.restart_count,
            ready=ready,
            started=isinstance(st, Running),
            container_id=f"process://{pid}" if pid else "",
        )

    def _should_restart(self, exit_code: int) -> bool:
        policy = self.rt._policy
        if self.is_init:
            return exit_code != 0 and policy != "Never"
        return policy == "Always" or (policy == "OnFailure" and exit_code != 0)

    def run(self) -> bool:
        """Start, wait, restart per policy; True when the last run exited 0 (runs in a thread)."""
        rt = self.rt
        failures = 0
        while True:
            result = self._run_once()
            if result is None:
                return False
            exit_code, started = result
            with rt._lock:
                if rt._stopping.is_set() or not self._should_restart(exit_code):
                    return exit_code == 0
                if time.time() - started >= rt.backoff_reset:
                    failures = 0
                failures += 1
                delay = min(rt.backoff_base * (2 ** (failures - 1)), rt.backoff_max)
                self.last_state = self.state
                pod = rt._pod
                assert pod is not None
                self.state = Waiting(
                    "CrashLoopBackOff",
                    f"back-off {delay:g}s restarting failed container={self.spec.name} "
                    f"pod={pod.name}_{pod.namespace}({pod.uid})",
                )
                rt._changed()
            if rt._stopping.wait(delay):
                return False

    def _run_once(self) -> tuple[int, float] | None:
        rt = self.rt
        with rt._lock:
            if rt._stopping.is_set():
                return None
            pod = rt._pod
            assert pod is not None
            if self.starts:
                self.restart_count += 1
            self.starts += 1
            if self.prev_log is not None:
                self.prev_log.remove()
            self.prev_log = self.log
            log = ContainerLog(rt.log_dir / self.spec.name / f"{self.restart_count}.log", rt.max_log_bytes)
            self.log = log
            env = container_environment(
                pod, self.spec, pod_ip=rt.pod_ip, host_ip=rt.host_ip, base=rt.base_env(pod)
            )
            argv = [expand_vars(a, env) for a in self.spec.argv]
            started = time.time()
            try:
                if self.spec.working_dir:
                    os.makedirs(self.spec.working_dir, exist_ok=True)
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                    cwd=self.spec.working_dir,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                message = f"failed to start container {self.spec.name!r}: {exc}"
                log.write("stderr", message.encode())
                log.finish()
                if isinstance(self.state, Terminated):
                    self.last_state = self.state
                self.state = Terminated(128, "StartError", started, started, message=message)
                rt._changed()
                return 128, started
            self.proc = proc
            if isinstance(self.state, Terminated):
                self.last_state = self.state
            self.state = Running(started)
            rt._changed()
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            threading.Thread(target=log.pump, args=(os.dup(proc.stdout.fileno()), "stdout"), daemon=True),
            threading.Thread(target=log.pump, args=(os.dup(proc.stderr.fileno()), "stderr"), daemon=True),
        ]
        proc.stdout.close()
        proc.stderr.close()
        for p in pumps:
            p.start()
        rc = _reap(proc)
        for p in pumps:
            p.join(2.0)
        log.finish()
        code, sig = _exit_code(rc)
        with rt._lock:
            if isinstance(self.state, Terminated):
                self.last_state = self.state
            self.state = Terminated(code, terminated_reason(code), time.time(), started, signal=sig)
            self.proc = None
            rt._changed()
        return code, started


class ProcessExec:
    """``kubectl exec`` into a process-runtime container: a sibling process with the container's env."""

    def __init__(
        self,
        argv: list[str],
        env: Mapping[str, str],
        cwd: str | None,
        tty: bool,
        stdin: bool,
        on_done: Callable[[ProcessExec], None],
    ) -> None:
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self._tty = tty
        self._master: int | None = None
        self._exited = threading.Event()
        self._rc = 0
        self._on_done = on_done
        if tty:
            import pty

            master, slave = pty.openpty()
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    env=dict(env),
                    cwd=cwd,
                    start_new_session=True,
                    close_fds=True,
                )
            finally:
                os.close(slave)
            self._master = master
            self._streams = 1
            self._reader(os.dup(master), "stdout")
        else:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
            assert self._proc.stdout is not None and self._proc.stderr is not None
            self._streams = 2
            self._reader(os.dup(self._proc.stdout.fileno()), "stdout")
            self._reader(os.dup(self._proc.stderr.fileno()), "stderr")
            self._proc.stdout.close()
            self._proc.stderr.close()
        threading.Thread(target=self._wait, daemon=True).start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _reader(self, fd: int, stream: str) -> None:
        def run() -> None:
            try:
                while True:
                    try:
                        data = os.read(fd, 65536)
                    except OSError:
                        break
                    if not data:
                        break
                    self._queue.put((stream, data))
            finally:
                os.close(fd)
                self._queue.put(None)

        threading.Thread(target=run, daemon=True).start()

    def _wait(self) -> None:
        self._rc = _reap(self._proc)
        self._exited.set()
        self._on_done(self)

    def write_stdin(self, data: bytes) -> None:
        try:
            if self._master is not None:
                os.write(self._master, data)
            elif self._proc.stdin is not None:
                self._proc.stdin.write(data)
                self._proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def close_stdin(self) -> None:
        if self._master is not None:
            self.write_stdin(b"\x04")
            return
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def resize(self, width: int, height: int) -> None:
        if self._master is None:
            return
        import fcntl
        import struct
        import termios

        with contextlib.suppress(OSError):
            fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def output(self) -> Iterator[tuple[str, bytes]]:
        ended = 0
        exited_at: float | None = None
        while ended < self._streams:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                # Something that escaped the process group may hold the pipe open: give up 2 s
                # after the command itself exited.
                if self._exited.is_set():
                    exited_at = exited_at or time.monotonic()
                    if time.monotonic() - exited_at > 2.0:
                        return
                continue
            if item is None:
                ended += 1
            else:
                yield item

    def wait(self) -> int:
        self._exited.wait()
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.close(self._master)
            self._master = None
        return _exit_code(self._rc)[0]

    def kill(self) -> None:
        if not self._exited.is_set():
            _killpg(self._proc.pid, signal.SIGKILL)

    def signal(self, sig: int) -> None:
        if not self._exited.is_set():
            _killpg(self._proc.pid, sig)


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
    ) -> None:
        self.log_dir = log_dir
        self.pod_ip = pod_ip
        self.host_ip = host_ip or pod_ip
        self.max_log_bytes = max_log_bytes
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.backoff_reset = backoff_reset
        self._environ = dict(os.environ if environ is None else environ)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._version = 0
        self._pod: PodSpec | None = None
        self._policy = "Always"
        self._init: list[_Container] = []
        self._apps: list[_Container] = []
        self._stopping = threading.Event()
        self._terminated = False
        self._terminate_message = ""
        self._launched_at: float | None = None
        self._execs: set[ProcessExec] = set()
        self._tracker = ConditionTracker()
        self._supervisor: threading.Thread | None = None

    # -- helpers ---------------------------------------------------------------------------
    def _changed(self) -> None:
        with self._cond:
            self._version += 1
            self._cond.notify_all()

    def notify(self) -> None:
        self._changed()

    def base_env(self, pod: PodSpec) -> dict[str, str]:
        env = {
            k: v
            for k, v in self._environ.items()
            if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER")
        }
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        env["HOSTNAME"] = pod.name
        return env

    def _all(self) -> list[_Container]:
        return [*self._init, *self._apps]

    def _find(self, name: str) -> _Container:
        pod = self._pod
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
        with self._lock:
            if self._pod is not None:
                if self._pod.uid == pod.uid:
                    return self.snapshot()
                if not self._terminated:
                    raise FailedPrecondition(
                        f"pod {self._pod.namespace}/{self._pod.name} (uid {self._pod.uid}) is already "
                        "running on this instance; terminate it first"
                    )
                self._reset()
            self._pod = pod
            self._policy = pod.restart_policy
            self._launched_at = time.time()
            self._stopping.clear()
            self._terminated = False
            self._tracker.reset()
            first = "PodInitializing" if pod.init_containers else "ContainerCreating"
            self._init = [_Container(self, c, True, Waiting("PodInitializing")) for c in pod.init_containers]
            self._apps = [_Container(self, c, False, Waiting(first)) for c in pod.containers]
            self._supervisor = threading.Thread(target=self._supervise, name="vkec2-pod", daemon=True)
            self._supervisor.start()
            self._changed()
            return self.snapshot()

    def _reset(self) -> None:
        for c in self._all():
            for log in (c.log, c.prev_log):
                if log is not None:
                    log.remove()
        shutil.rmtree(self.log_dir, ignore_errors=True)
        self._pod = None
        self._init, self._apps = [], []

    def _supervise(self) -> None:
        for c in self._init:
            c.thread = threading.current_thread()
            if not c.run():
                return
        with self._lock:
            if self._stopping.is_set():
                return
            for c in self._apps:
                c.thread = threading.Thread(target=c.run, name=f"vkec2-{c.spec.name}", daemon=True)
                c.thread.start()

    def snapshot(self) -> PodSnapshot:
        with self._lock:
            pod = self._pod
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
                phase = derive_phase(self._policy, inits, apps)
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
        with self._lock:
            if self._pod is None or self._terminated:
                return self.snapshot()
            self._stopping.set()
            pids = self._live_pids()
            self._changed()
        for pid in pids:
            _killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        with self._cond:
            while self._live_pids() and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(min(left, 0.5))
            pids = self._live_pids()
        for pid in pids:
            _killpg(pid, signal.SIGKILL)
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
        with self._lock:
            self._terminated = True
            for c in self._all():
                if isinstance(c.state, Waiting) and isinstance(c.last_state, Terminated):
                    # A container waiting out its back-off is not restarted: its last run is final.
                    c.state, c.last_state = c.last_state, None
            killed = " (grace period expired: SIGKILL sent)" if pids else ""
            self._terminate_message = (
                f"terminated on request with a grace period of {grace_seconds:g}s{killed}"
            )
            self._changed()
            return self.snapshot()

    def logs(
        self, container: str, previous: bool, query: LogQuery, active: Callable[[], bool]
    ) -> Iterator[bytes]:
        with self._lock:
            c = self._find(container)
            assert self._pod is not None
            log = c.prev_log if previous else c.log
            if log is None:
                if previous:
                    raise FailedPrecondition(
                        f"previous terminated container {c.spec.name!r} in pod {self._pod.name!r} not found"
                    )
                st = c.state
                why = st.reason if isinstance(st, Waiting) else "not started"
                raise FailedPrecondition(
                    f"container {c.spec.name!r} in pod {self._pod.name!r} is waiting to start: {why}"
                )
        return read_log(log, query, active)

    def exec(self, container: str, command: list[str], tty: bool, stdin: bool) -> ProcessExec:
        if not command:
            raise InvalidArgument("exec needs a command")
        with self._lock:
            c = self._find(container)
            pod = self._pod
            assert pod is not None
            if not isinstance(c.state, Running) or self._stopping.is_set():
                raise FailedPrecondition(f"container {c.spec.name!r} is not running; cannot exec into it")
            env = container_environment(
                pod, c.spec, pod_ip=self.pod_ip, host_ip=self.host_ip, base=self.base_env(pod)
            )

            def done(session: ProcessExec) -> None:
                with self._lock:
                    self._execs.discard(session)
                    self._cond.notify_all()

            try:
                session = ProcessExec(command, env, c.spec.working_dir, tty, stdin, done)
            except OSError as exc:
                raise FailedPrecondition(f"exec failed to start {command[0]!r}: {exc}") from None
            if not session._exited.is_set():
                self._execs.add(session)
            return session

    def close(self) -> None:
        """Agent shutdown: the workload cannot be adopted by a later agent, so it is stopped too."""
        self.terminate(5)
