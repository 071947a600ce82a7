"""The agent's gRPC server and command line (``python -m agent`` / ``vkec2 agent``).

It holds one runtime (one pod per instance) and serves it in one of three modes:

* ``insecure`` (``--insecure``): every service in plaintext, for local development only; a loud
  warning says so.
* ``bootstrap`` (the default at start): plaintext, but only AgentBootstrap and grpc.health. The
  fleet checks GetAgentIdentity, then LaunchAuthenticatedEndpoint hands over a server certificate,
  key and the fleet CA.
* ``authenticated``: the listener is restarted on the same address with TLS requiring client
  certificates signed by that CA; plaintext is refused. With ``--state-dir`` the material survives a
  restart of the agent.

Every lifecycle call must carry this instance's ID in the ``x-vkec2-instance-id`` metadata.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
from concurrent import futures
from pathlib import Path
from types import FrameType

import grpc

import agent
from agent.bootstrap import (
    IMDS_ENDPOINT,
    Identity,
    IdentityError,
    TlsMaterial,
    identity_from_file,
    identity_from_imds,
)
from agent.runtime import Runtime
from agent.runtime_process import ProcessRuntime
from agent.runtime_sim import SimOutcome, SimRuntime
from agent.service import SERVER_OPTIONS, Instance, SimControl, add_services, check_instance_id

log = logging.getLogger("vkec2.agent")

INSECURE_WARNING = """\
******************************************************************************
* vkec2 agent: --insecure. Every service, the workload API included, is served *
* in PLAINTEXT without authentication. Use this for local development only.   *
******************************************************************************"""


class AgentServer:
    """One agent: a runtime behind a gRPC server whose transport follows the bootstrap mode."""

    def __init__(
        self,
        listen: str,
        identity: Identity,
        runtime: Runtime,
        *,
        insecure: bool = False,
        simulation: bool = False,
        state_dir: Path | None = None,
        max_workers: int = 64,
    ) -> None:
        self._host_part, _, port = listen.rpartition(":")
        if not self._host_part or not port.isdigit():
            raise ValueError(f"--listen must be HOST:PORT, got {listen!r}")
        self._port = int(port)
        self._identity = identity
        self._instance = Instance(identity.instance_id, runtime, SimControl() if simulation else None)
        self._simulation = simulation
        self._insecure = insecure
        self._state_dir = state_dir
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._mode = "insecure" if insecure else "bootstrap"
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._stopped = threading.Event()
        self.switched = threading.Event()

    # -- Host ------------------------------------------------------------------------------
    def resolve(self, context: grpc.ServicerContext) -> Instance:
        check_instance_id(context, self._identity.instance_id)
        return self._instance

    def health_target(self, context: grpc.ServicerContext) -> Instance | None:
        return self._instance

    def identity(self, context: grpc.ServicerContext) -> Identity:
        return self._identity

    def mode(self) -> str:
        return self._mode

    def authenticate(self, material: TlsMaterial, context: grpc.ServicerContext) -> str:
        with self._lock:
            if self._mode == "insecure":
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "this agent runs with --insecure; there is no authenticated endpoint to launch",
                )
            if self._mode != "bootstrap":
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "already authenticated: LaunchAuthenticatedEndpoint is one-shot",
                )
            self._mode = "switching"
        # Switch once this answer has left: the callback runs when the RPC is complete.
        context.add_callback(
            lambda: threading.Thread(
                target=self._switch, args=(material,), name="vkec2-tls", daemon=True
            ).start()
        )
        return "authenticated"

    # -- serving ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return f"{self._host_part}:{self._port}"

    def _build(self, mode: str, material: TlsMaterial | None) -> None:
        executor = futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="vkec2-rpc")
        server = grpc.server(executor, options=SERVER_OPTIONS)
        add_services(server, self, lifecycle=mode != "bootstrap", simulation=self._simulation)
        if material is not None:
            creds = grpc.ssl_server_credentials(
                [(material.key_pem, material.cert_pem)],
                root_certificates=material.ca_pem,
                require_client_auth=True,
            )
            port = server.add_secure_port(self.address, creds)
        else:
            port = server.add_insecure_port(self.address)
        if not port:
            executor.shutdown(wait=False)
            raise OSError(f"cannot listen on {self.address}")
        self._port = port
        server.start()
        self._server, self._executor, self._mode = server, executor, mode

    def start(self) -> None:
        material = TlsMaterial.load(self._state_dir) if self._state_dir and not self._insecure else None
        if self._insecure:
            print(INSECURE_WARNING, file=sys.stderr, flush=True)
            self._build("insecure", None)
        elif material is not None:
            log.info("found TLS material in %s: serving authenticated", self._state_dir)
            self._build("authenticated", material)
        else:
            self._build("bootstrap", None)
        log.info(
            "vkec2 agent %s for %s listening on %s (%s)",
            agent.__version__,
            self._identity.instance_id,
            self.address,
            self._mode,
        )

    def _stop_current(self, grace: float) -> None:
        server, executor = self._server, self._executor
        if server is not None:
            server.stop(grace).wait()
        if executor is not None:
            executor.shutdown(wait=False)
        self._server = self._executor = None

    def _switch(self, material: TlsMaterial) -> None:
        with self._lock:
            if self._stopped.is_set():
                return
            self._stop_current(1.0)
            try:
                self._build("authenticated", material)
            except Exception:
                log.exception("cannot serve TLS with the material received; back to bootstrap mode")
                self._build("bootstrap", None)
                return
            if self._state_dir is not None:
                material.save(self._state_dir)
            log.info("authenticated: serving mTLS on %s", self.address)
        self.switched.set()

    def stop(self, grace: float = 2.0) -> None:
        with self._lock:
            self._stopped.set()
            self._stop_current(grace)
        self._instance.runtime.close()

    def wait(self) -> None:
        self._stopped.wait()


# ------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vkec2 agent", description="Run the vkec2 agent (gRPC server).")
    p.add_argument("--listen", default="0.0.0.0:8200", help="HOST:PORT to listen on (default 0.0.0.0:8200)")
    p.add_argument("--insecure", action="store_true", help="serve everything in plaintext (development only)")
    p.add_argument("--runtime", choices=("process", "sim"), default="process")
    p.add_argument("--enable-simulation", action="store_true", help="serve the Simulation service")
    ident = p.add_mutually_exclusive_group()
    ident.add_argument("--instance-id", help="fixed instance ID (simulation and tests; skips IMDS)")
    ident.add_argument("--identity-file", help="instance identity document (JSON) instead of IMDS")
    p.add_argument("--imds-endpoint", default=IMDS_ENDPOINT, help="instance metadata service URL")
    p.add_argument("--region", default="", help="region reported with --instance-id")
    p.add_argument("--pod-ip", default=None, help="IP reported as status.podIP (default: the instance's)")
    p.add_argument("--state-dir", default=None, help="keep TLS material here across restarts")
    p.add_argument("--log-dir", default=None, help="container logs (default: STATE_DIR/logs or a temp dir)")
    p.add_argument("--max-log-bytes", type=int, default=10 * 1024 * 1024, help="per container log file")
    p.add_argument("--restart-backoff", type=float, default=10.0, help="first crash-loop back-off, seconds")
    p.add_argument("--restart-backoff-max", type=float, default=300.0)
    p.add_argument("--sim-start-delay", type=float, default=0.0)
    p.add_argument("--sim-run-seconds", type=float, default=None)
    p.add_argument("--sim-exit-code", type=int, default=0)
    p.add_argument("--sim-seed", type=int, default=None, help="random statuses from this seed")
    p.add_argument("--max-workers", type=int, default=64)
    p.add_argument("--log-level", default="INFO")
    return p


def load_identity(args: argparse.Namespace) -> Identity:
    if args.instance_id:
        return Identity(args.instance_id, region=args.region, source="static")
    if args.identity_file:
        return identity_from_file(args.identity_file)
    return identity_from_imds(args.imds_endpoint)


def make_runtime(args: argparse.Namespace, identity: Identity, log_dir: Path) -> Runtime:
    pod_ip = args.pod_ip if args.pod_ip is not None else identity.private_ip
    if args.runtime == "sim":
        outcome = SimOutcome(
            start_delay=args.sim_start_delay, run_seconds=args.sim_run_seconds, exit_code=args.sim_exit_code
        )
        return SimRuntime(outcome, pod_ip=pod_ip, seed=args.sim_seed)
    return ProcessRuntime(
        log_dir,
        pod_ip=pod_ip,
        max_log_bytes=args.max_log_bytes,
        backoff_base=args.restart_backoff,
        backoff_max=args.restart_backoff_max,
    )


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        identity = load_identity(args)
    except IdentityError as exc:
        print(f"vkec2 agent: {exc}", file=sys.stderr)
        return 1
    state_dir = Path(args.state_dir) if args.state_dir else None
    if args.log_dir:
        log_dir = Path(args.log_dir)
    elif state_dir is not None:
        log_dir = state_dir / "logs"
    else:
        log_dir = Path(tempfile.mkdtemp(prefix="vkec2-agent-logs-"))
    runtime = make_runtime(args, identity, log_dir)
    server = AgentServer(
        args.listen,
        identity,
        runtime,
        insecure=args.insecure,
        simulation=args.enable_simulation,
        state_dir=state_dir,
        max_workers=args.max_workers,
    )
    try:
        server.start()
    except (OSError, ValueError) as exc:
        print(f"vkec2 agent: {exc}", file=sys.stderr)
        return 1

    def on_signal(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.stop, name="vkec2-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(
        f"vkec2 agent listening on {server.address} pid={os.getpid()} mode={server.mode()}",
        file=sys.stderr,
        flush=True,
    )
    server.wait()
    # stop() runs in its own thread: give it the time to terminate the workload.
    for t in threading.enumerate():
        if t.name == "vkec2-stop":
            t.join(30)
    return 0
