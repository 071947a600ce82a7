"""The probe engine: runs a container's liveness, readiness and startup probes the way the kubelet does.

:func:`run_handler` performs one probe (``exec`` in the container's environment, ``httpGet``
with 200-399 as success, ``tcpSocket``, ``grpc`` with grpc.health.v1 ``Check``) within its
``timeoutSeconds``. :class:`ProbeState` is the pure threshold state machine (``successThreshold``
consecutive successes or ``failureThreshold`` consecutive failures flip a result). A
:class:`ContainerProbes` exists for one run of one container: one thread per probe waits
``initialDelaySeconds``, then probes every ``periodSeconds``; until the startup probe succeeds the
liveness and readiness probes do not run (the container is not ready); a failed probe records an
``Unhealthy`` Warning; a liveness or startup probe past its threshold records ``Killing`` and
kills the container (SIGTERM, then SIGKILL after the probe's or the pod's grace period), and the
container's restart policy decides what happens next. Only stdlib and grpcio: the agent runs on
the instance with nothing else; no library runs Kubernetes probes outside the kubelet.
"""

from __future__ import annotations

import http.client
import signal
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.probespec import ProbeSpec
from agent.process_group import killpg

#: How much of a probe's output goes into its event message (the kubelet keeps 10 KiB).
MAX_OUTPUT = 1024


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_OUTPUT else text[:MAX_OUTPUT] + "..."


def _exec(spec: ProbeSpec, env: Mapping[str, str], cwd: str | None) -> tuple[bool, str]:
    try:
        proc = subprocess.Popen(
            list(spec.command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        return False, f"failed to run {spec.command[0]!r}: {exc}"
    try:
        out, _ = proc.communicate(timeout=spec.timeout)
    except subprocess.TimeoutExpired:
        killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return False, f"command {' '.join(spec.command)!r} timed out after {spec.timeout:g}s"
    killpg(proc.pid, signal.SIGKILL)
    return proc.returncode == 0, _clip(out.decode(errors="replace"))


def _http(spec: ProbeSpec) -> tuple[bool, str]:
    url = f"{spec.scheme.lower()}://{spec.host}:{spec.port}{spec.path}"
    conn: http.client.HTTPConnection
    if spec.scheme == "HTTPS":  # the kubelet does not verify a probe's certificate either
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(spec.host, spec.port, timeout=spec.timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(spec.host, spec.port, timeout=spec.timeout)
    headers = {"User-Agent": "kube-probe/vkec2", "Accept": "*/*"}
    headers.update(dict(spec.headers))
    try:
        conn.request("GET", spec.path, headers=headers)
        response = conn.getresponse()
        body = response.read(MAX_OUTPUT).decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        return False, f'Get "{url}": {exc or type(exc).__name__}'
    finally:
        conn.close()
    if 200 <= response.status < 400:
        return True, body
    return False, f"HTTP probe failed with statuscode: {response.status}"


def _tcp(spec: ProbeSpec) -> tuple[bool, str]:
    try:
        with socket.create_connection((spec.host, spec.port), timeout=spec.timeout):
            return True, ""
    except OSError as exc:
        return False, f"dial tcp {spec.host}:{spec.port}: {exc}"


def _grpc(spec: ProbeSpec) -> tuple[bool, str]:
    target = f"{spec.host}:{spec.port}"
    with grpc.insecure_channel(target) as channel:  # a probe is local, as the kubelet's is plaintext
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=spec.service), timeout=spec.timeout
            )
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                return False, f'timeout: failed to connect service "{target}" within {spec.timeout:g}s'
            detail = err.details() if isinstance(err, grpc.Call) else str(err)
            return False, f"error: health rpc probe failed: {code.name if code else ''} {detail}".strip()
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status == health_pb2.HealthCheckResponse.SERVING:
        return True, ""
    return False, f'service unhealthy (responded with "{status}")'


def run_handler(spec: ProbeSpec, env: Mapping[str, str], cwd: str | None) -> tuple[bool, str]:
    """Run the probe once: (success, output or failure reason)."""
    if spec.handler == "exec":
        return _exec(spec, env, cwd)
    if spec.handler == "httpGet":
        return _http(spec)
    if spec.handler == "tcpSocket":
        return _tcp(spec)
    return _grpc(spec)


class ProbeState:
    """Consecutive results against the thresholds; ``result`` starts as the kubelet's initial value."""

    def __init__(self, spec: ProbeSpec) -> None:
        self.spec = spec
        self.result = spec.kind == "Liveness"  # liveness starts as success, readiness/startup as failure
        self._last: bool | None = None
        self._run = 0

    def observe(self, ok: bool) -> bool:
        """Fold one probe result in; True when ``result`` flipped."""
        if ok == self._last:
            self._run += 1
        else:
            self._last, self._run = ok, 1
        threshold = self.spec.success_threshold if ok else self.spec.failure_threshold
        if ok != self.result and self._run >= threshold:
            self.result = ok
            return True
        return False


class ContainerProbes:
    """The probes of one run of a container; ``started`` and ``ready`` are read under ``lock``."""

    def __init__(
        self,
        name: str,
        probes: tuple[ProbeSpec, ...],
        *,
        lock: threading.RLock,
        changed: Callable[[], None],
        event: Callable[[str, str, str], None],
        kill: Callable[[float | None, Callable[[], None]], None],
        env: Mapping[str, str],
        cwd: str | None,
        restarts: bool = True,
        stopping: threading.Event | None = None,
    ) -> None:
        self.name = name
        self.probes = probes
        self.lock = lock
        self._changed = changed
        self._event = event
        self._kill = kill
        self.env = dict(env)
        self.cwd = cwd
        self.restarts = restarts  # whether the restart policy restarts a killed run (the event says so)
        kinds = {p.kind for p in probes}
        self.started = "Startup" not in kinds
        self.has_readiness = "Readiness" in kinds
        self.readiness_ok = False
        self.stop = threading.Event()
        self.pod_stopping = stopping or threading.Event()  # the pod is being terminated: probes end
        self.threads: list[threading.Thread] = []

    @property
    def ready(self) -> bool:
        """Ready as the kubelet says it: started, and the readiness probe passing (if there is one)."""
        return self.started and (self.readiness_ok or not self.has_readiness)

    def start(self) -> None:
        for spec in self.probes:
            t = threading.Thread(
                target=self._loop, args=(spec,), name=f"vkec2-probe-{self.name}-{spec.kind}", daemon=True
            )
            self.threads.append(t)
            t.start()

    def close(self) -> None:
        """The run ended: probes stop (a probe in flight finishes within its timeout)."""
        self.stop.set()

    def _loop(self, spec: ProbeSpec) -> None:
        state = ProbeState(spec)
        if self.stop.wait(spec.initial_delay):
            return
        while not self.stop.is_set() and not self.pod_stopping.is_set():
            with self.lock:
                started = self.started
            if spec.kind == "Startup" and started:
                return
            if (spec.kind == "Startup" or started) and not self._probe_once(spec, state):
                return
            if self.stop.wait(spec.period):
                return

    def _probe_once(self, spec: ProbeSpec, state: ProbeState) -> bool:
        """One probe and what follows from it; False when this probe is done for this run."""
        ok, output = run_handler(spec, self.env, self.cwd)
        if self.stop.is_set() or self.pod_stopping.is_set():
            return False
        if not ok:
            self._event("Warning", "Unhealthy", f"{spec.kind} probe failed: {output}")
        if not state.observe(ok):
            return True
        if spec.kind == "Readiness":
            with self.lock:
                self.readiness_ok = state.result
            self._changed()
            return True
        if spec.kind == "Startup" and state.result:
            with self.lock:
                self.started = True
            self._changed()
            return False
        what = "liveness" if spec.kind == "Liveness" else "startup"
        restart = ", will be restarted" if self.restarts else ""
        message = f"Container {self.name} failed {what} probe{restart}"
        self._kill(spec.termination_grace, lambda: self._event("Normal", "Killing", message))
        return False


def stop_process(pid: int, grace: float, exited: threading.Event) -> None:
    """SIGTERM the container's process group, SIGKILL it if it is still there after ``grace`` seconds."""
    killpg(pid, signal.SIGTERM)
    if not exited.wait(grace):
        killpg(pid, signal.SIGKILL)
