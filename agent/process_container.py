"""One container of a process-runtime pod: its process, its truthful status, its restarts.

A :class:`ProcessContainer` starts its command as a child process in its own session and process
group, with the spec's environment (``$(VAR)`` expansion, ``fieldRef``) and working directory, and
pumps its stdout and stderr into a size-bounded log, one file per start. Its ``run`` (the thread of
an app container, or the pod's supervisor for init containers) applies the restart policy with
exponential back-off (``CrashLoopBackOff``), reset after a long enough run. Each run gets its
probes (:mod:`agent.probes`), which decide ``started`` and ``ready`` and may kill the run. All of its state is
guarded by its owner's lock (:class:`ContainerOwner`, the process runtime), and every change is
signalled through it.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from agent.logs import ContainerLog
from agent.model import (
    ContainerSnapshot,
    Running,
    State,
    Terminated,
    Waiting,
    terminated_reason,
)
from agent.podspec import ContainerSpec, PodSpec, container_environment, expand_vars
from agent.probes import ContainerProbes, stop_process
from agent.process_group import exit_code_of, reap


class ContainerOwner(Protocol):
    """What a container needs of the runtime that owns it (:class:`agent.runtime_process.ProcessRuntime`)."""

    lock: threading.RLock
    stopping: threading.Event
    policy: str
    pod: PodSpec | None
    log_dir: Path
    max_log_bytes: int
    pod_ip: str
    host_ip: str
    backoff_base: float
    backoff_max: float
    backoff_reset: float

    def changed(self) -> None:
        """Wake whoever waits for a change of the pod's state."""
        ...

    def base_env(self, pod: PodSpec) -> dict[str, str]:
        """The environment every container of ``pod`` starts with."""
        ...

    def event(self, type_: str, reason: str, message: str, container: str) -> None:
        """Record an event about the pod (a probe's ``Unhealthy``, ``Killing``)."""
        ...


class ProcessContainer:
    """One container of the pod: its spec, its truthful status and its current process."""

    def __init__(self, rt: ContainerOwner, spec: ContainerSpec, is_init: bool, initial: Waiting) -> None:
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
        self.probes: ContainerProbes | None = None
        self.probe_killed = False  # this run was killed by its liveness or startup probe

    def snapshot(self) -> ContainerSnapshot:
        st = self.state
        if self.is_init:
            ready = isinstance(st, Terminated) and st.exit_code == 0
        else:
            ready = isinstance(st, Running) and not self.rt.stopping.is_set()
        probes = self.probes if isinstance(st, Running) else None
        started = isinstance(st, Running) and (probes is None or probes.started)
        ready = ready and (probes is None or probes.ready)
        pid = self.proc.pid if self.proc is not None else None
        return ContainerSnapshot(
            name=self.spec.name,
            image=self.spec.image,
            state=st,
            last_state=self.last_state,
            restart_count=self.restart_count,
            ready=ready,
            started=started,
            container_id=f"process://{pid}" if pid else "",
        )

    def _should_restart(self, exit_code: int) -> bool:
        policy = self.rt.policy
        if self.is_init:
            return exit_code != 0 and policy != "Never"
        if self.probe_killed:  # as the kubelet: a probe's kill restarts unless the policy is Never
            return policy != "Never"
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
            with rt.lock:
                if rt.stopping.is_set() or not self._should_restart(exit_code):
                    return exit_code == 0
                if time.time() - started >= rt.backoff_reset:
                    failures = 0
                failures += 1
                delay = min(rt.backoff_base * (2 ** (failures - 1)), rt.backoff_max)
                self.last_state = self.state
                pod = rt.pod
                assert pod is not None
                self.state = Waiting(
                    "CrashLoopBackOff",
                    f"back-off {delay:g}s restarting failed container={self.spec.name} "
                    f"pod={pod.name}_{pod.namespace}({pod.uid})",
                )
                rt.changed()
            if rt.stopping.wait(delay):
                return False

    def _run_once(self) -> tuple[int, float] | None:
        rt = self.rt
        with rt.lock:
            if rt.stopping.is_set():
                return None
            pod = rt.pod
            assert pod is not None
            if self.starts:
                self.restart_count += 1
            self.starts += 1
            self.probe_killed = False
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
                rt.changed()
                return 128, started
            self.proc = proc
            if isinstance(self.state, Terminated):
                self.last_state = self.state
            self.state = Running(started)
            self.probes = self._probes(env)
            rt.changed()
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            threading.Thread(target=log.pump, args=(os.dup(proc.stdout.fileno()), "stdout"), daemon=True),
            threading.Thread(target=log.pump, args=(os.dup(proc.stderr.fileno()), "stderr"), daemon=True),
        ]
        proc.stdout.close()
        proc.stderr.close()
        for p in pumps:
            p.start()
        rc = reap(proc)
        if self.probes is not None:
            self.probes.close()
        for p in pumps:
            p.join(2.0)
        log.finish()
        code, sig = exit_code_of(rc)
        with rt.lock:
            if isinstance(self.state, Terminated):
                self.last_state = self.state
            self.state = Terminated(code, terminated_reason(code), time.time(), started, signal=sig)
            self.proc = None
            rt.changed()
        return code, started

    def _probes(self, env: dict[str, str]) -> ContainerProbes | None:
        """This run's probes, started (under the owner's lock); None when the container has none."""
        spec = self.spec
        specs = tuple(p for p in (spec.startup, spec.liveness, spec.readiness) if p is not None)
        if not specs:
            return None
        run = self.starts
        probes = ContainerProbes(
            spec.name,
            specs,
            lock=self.rt.lock,
            changed=self.rt.changed,
            event=lambda type_, reason, message: self.rt.event(type_, reason, message, spec.name),
            kill=lambda grace, announce: self._probe_kill(run, grace, announce),
            env=env,
            cwd=spec.working_dir,
            restarts=self.rt.policy != "Never",
            stopping=self.rt.stopping,
        )
        probes.start()
        return probes

    def _probe_kill(self, run: int, grace: float | None, announce: Callable[[], None]) -> None:
        """A liveness or startup probe failed: stop this run (``announce`` first, the Killing event);
        the restart policy decides what follows. Nothing when the run is over or the pod is stopping."""
        with self.rt.lock:
            proc, probes, pod = self.proc, self.probes, self.rt.pod
            if (
                proc is None
                or probes is None
                or pod is None
                or self.starts != run
                or self.rt.stopping.is_set()
            ):
                return
            announce()
            self.probe_killed = True
        stop_process(proc.pid, pod.termination_grace if grace is None else grace, probes.stop)
