"""The agent's command line (``python -m agent`` / ``vkec2 agent``): identity, runtime and server, wired.

It reads the instance identity (IMDSv2, an identity file or a fixed ID) and the bootstrap trust the
user data wrote (the fleet CA to pin and the one-time secret), builds the runtime (the
process runtime, or ``--runtime sim``; on EC2 wrapped to report Spot notices, :mod:`agent.spot`),
and serves it with :class:`agent.server.AgentServer` until SIGTERM or SIGINT, which terminate the
workload before the agent exits. This is the one module of the real agent that may bring in
:mod:`agent.sim`, and only when asked to (``--runtime sim``, ``--enable-simulation``): a plain
agent on an instance never loads simulation code.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from agent.bootstrap import (
    IMDS_ENDPOINT,
    Identity,
    IdentityError,
    Trust,
    identity_from_file,
    identity_from_imds,
)
from agent.runtime import Runtime
from agent.runtime_process import ProcessRuntime
from agent.server import AgentServer
from agent.service import Extension
from agent.spot import POLL_SECONDS, NoticedRuntime, SpotWatch


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
    p.add_argument(
        "--spot-watch",
        choices=("auto", "on", "off"),
        default="auto",
        help="poll the instance metadata for Spot notices (auto: when the identity came from IMDS)",
    )
    p.add_argument("--spot-poll-seconds", type=float, default=POLL_SECONDS, help="Spot notice poll interval")
    p.add_argument("--region", default="", help="region reported with --instance-id")
    p.add_argument("--pod-ip", default=None, help="IP reported as status.podIP (default: the instance's)")
    p.add_argument("--state-dir", default=None, help="keep TLS material here across restarts")
    p.add_argument(
        "--fleet-ca-file", default=None, help="the fleet CA certificate to pin (from the user data)"
    )
    p.add_argument(
        "--bootstrap-secret-file",
        default=None,
        help="this launch's one-time bootstrap secret (from the user data)",
    )
    p.add_argument("--log-dir", default=None, help="container logs (default: STATE_DIR/logs or a temp dir)")
    p.add_argument(
        "--mount-root",
        default=None,
        help="make volume mountPaths under DIR/<pod uid> instead of at the instance's own paths",
    )
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
        from agent.sim.runtime import SimOutcome, SimRuntime

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
        mount_root=Path(args.mount_root) if args.mount_root else None,
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
    trust: Trust | None = None
    if bool(args.fleet_ca_file) != bool(args.bootstrap_secret_file):
        print("vkec2 agent: --fleet-ca-file and --bootstrap-secret-file go together", file=sys.stderr)
        return 1
    if args.fleet_ca_file and not args.insecure:
        try:
            trust = Trust.from_files(args.fleet_ca_file, args.bootstrap_secret_file)
        except IdentityError as exc:
            if not args.state_dir:  # a bootstrapped agent with state deleted its one-time secret
                print(f"vkec2 agent: {exc}", file=sys.stderr)
                return 1
            logging.getLogger("vkec2.agent").info(
                "no bootstrap trust (%s): only saved TLS material can serve", exc
            )
    state_dir = Path(args.state_dir) if args.state_dir else None
    if args.log_dir:
        log_dir = Path(args.log_dir)
    elif state_dir is not None:
        log_dir = state_dir / "logs"
    else:
        log_dir = Path(tempfile.mkdtemp(prefix="vkec2-agent-logs-"))
    runtime = make_runtime(args, identity, log_dir)
    if args.spot_watch == "on" or (args.spot_watch == "auto" and identity.source == "imds"):
        watch = SpotWatch(args.imds_endpoint, max(0.5, args.spot_poll_seconds))
        runtime = NoticedRuntime(runtime, watch)
        watch.start()
    extension: Extension | None = None
    if args.enable_simulation:
        from agent.sim.control import ControlledRuntime
        from agent.sim.service import Simulation

        runtime, extension = ControlledRuntime(runtime), Simulation()
    server = AgentServer(
        args.listen,
        identity,
        runtime,
        insecure=args.insecure,
        extension=extension,
        state_dir=state_dir,
        max_workers=args.max_workers,
        trust=trust,
        secret_file=Path(args.bootstrap_secret_file) if args.bootstrap_secret_file else None,
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
