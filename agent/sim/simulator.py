"""The agent simulator (``vkec2 agent-sim``): thousands of virtual agents in one process, for local runs.

Every call names its instance in the ``x-vkec2-instance-id`` metadata, and that picks the virtual
agent. A virtual agent exists only for an instance that is ``running`` at the configured EC2
endpoint (moto's server locally) and only once the boot delay, counted from the instance's
LaunchTime, has passed; any other instance gets UNAVAILABLE, exactly what the fleet sees from an
agent that has not booted yet. The set of running instances is refreshed with paginated,
state-filtered DescribeInstances calls in the background and on a miss (at most once per
``--miss-refresh`` seconds, single-flight), so 5,000 instances cost a handful of EC2 calls, not one
per health check. Virtual agents use the simulated runtime unless ``--runtime process`` is asked
for and always serve the Simulation service with its fault injection (:mod:`agent.sim.service`).
They speak plaintext (``--insecure`` agents) unless ``--tls-cert`` is given: then the listener is
mTLS and every virtual agent is bootstrapped like a real one (:mod:`agent.sim.bootstrap`). The EC2
side is :mod:`agent.sim.inventory`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from types import FrameType

import grpc

from agent.bootstrap import CertificateRequest, Identity
from agent.host import Instance, metadata_instance_id
from agent.runtime import Runtime
from agent.runtime_process import ProcessRuntime
from agent.service import make_server
from agent.sim.bootstrap import SimBootstrap
from agent.sim.control import ControlledRuntime
from agent.sim.faults import Partition
from agent.sim.identity import TEST_ACCOUNT, DocumentSigner
from agent.sim.inventory import Ec2Inventory
from agent.sim.runtime import SimOutcome, SimRuntime
from agent.sim.service import Simulation

log = logging.getLogger("vkec2.agent.simulator")


class SimulatorHost:
    """Routes each call to the virtual agent of the instance its metadata names."""

    def __init__(
        self,
        inventory: Ec2Inventory,
        boot_delay: float,
        make_runtime: Callable[[str], Runtime],
        region: str,
        tls: SimBootstrap | None = None,
    ) -> None:
        self._tls = tls
        self._inventory = inventory
        self._boot_delay = boot_delay
        self._make_runtime = make_runtime
        self._region = region
        self._agents: dict[str, Instance] = {}
        self._lock = threading.Lock()

    def agents(self) -> int:
        return len(self._agents)

    def prune(self, running: set[str]) -> None:
        """Forget the virtual agents of instances that are no longer running."""
        with self._lock:
            gone = [iid for iid in self._agents if iid not in running]
            dropped = [self._agents.pop(iid) for iid in gone]
        if self._tls is not None:
            self._tls.forget(gone)
        for inst in dropped:
            inst.runtime.close()

    def _lookup(self, context: grpc.ServicerContext, iid: str) -> Instance:
        launched = self._inventory.launch_time(iid)
        if launched is None:
            context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"simulated agent unreachable: no running instance {iid} at the EC2 endpoint",
            )
        assert launched is not None
        wait = launched + self._boot_delay - time.time()
        if wait > 0:
            context.abort(
                grpc.StatusCode.UNAVAILABLE, f"simulated agent of {iid} is still booting ({wait:.1f}s to go)"
            )
        inst = self._agents.get(iid)
        if inst is None:
            with self._lock:
                inst = self._agents.get(iid)
                if inst is None:
                    inst = Instance(iid, ControlledRuntime(self._make_runtime(iid)))
                    self._agents[iid] = inst
        return inst

    def _named(self, context: grpc.ServicerContext) -> Instance:
        iid = metadata_instance_id(context)
        if not iid:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "missing x-vkec2-instance-id metadata: the simulator routes calls by instance ID",
            )
        return self._lookup(context, iid)

    def resolve(self, context: grpc.ServicerContext) -> Instance:
        inst = self._named(context)
        if self._tls is not None:
            self._tls.require_authenticated(inst.instance_id, context)
        return inst

    def health_target(self, context: grpc.ServicerContext) -> Instance | None:
        iid = metadata_instance_id(context)
        return self._lookup(context, iid) if iid else None

    def identity(self, context: grpc.ServicerContext) -> Identity:
        inst = self._named(context)
        if self._tls is not None:
            return self._tls.identity(inst.instance_id)
        return Identity(inst.instance_id, region=self._region, source="simulator")

    def mode(self, context: grpc.ServicerContext | None = None) -> str:
        if self._tls is None:
            return "insecure"
        iid = metadata_instance_id(context) if context is not None else ""
        return self._tls.mode(iid) if iid else "bootstrap"

    def _plaintext_only(self, context: grpc.ServicerContext) -> None:
        context.abort(
            grpc.StatusCode.FAILED_PRECONDITION,
            "this agent simulator serves plaintext (no --tls-cert): there is no bootstrap to make",
        )

    def certificate_request(self, nonce: bytes, context: grpc.ServicerContext) -> CertificateRequest:
        inst = self._named(context)
        if self._tls is None:
            self._plaintext_only(context)
        assert self._tls is not None
        return self._tls.certificate_request(inst.instance_id, nonce, context)

    def install_certificate(self, cert_pem: bytes, chain_pem: bytes, context: grpc.ServicerContext) -> str:
        inst = self._named(context)
        if self._tls is None:
            self._plaintext_only(context)
        assert self._tls is not None
        return self._tls.install_certificate(inst.instance_id, cert_pem, chain_pem, context)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vkec2 agent-sim", description="Many simulated agents in one process, keyed by instance ID."
    )
    p.add_argument("--listen", default="127.0.0.1:8200", help="HOST:PORT (default 127.0.0.1:8200)")
    p.add_argument(
        "--ec2-endpoint", required=True, help="EC2 API endpoint, e.g. moto's http://127.0.0.1:5000"
    )
    p.add_argument("--region", default="us-west-2")
    p.add_argument(
        "--boot-delay", type=float, default=0.0, help="seconds after LaunchTime before an agent answers"
    )
    p.add_argument("--runtime", choices=("sim", "process"), default="sim")
    p.add_argument("--refresh-interval", type=float, default=5.0, help="seconds between inventory refreshes")
    p.add_argument(
        "--miss-refresh",
        type=float,
        default=1.0,
        help="on an unknown instance, refresh at most this often (negative cache)",
    )
    p.add_argument("--sim-start-delay", type=float, default=0.0)
    p.add_argument("--sim-run-seconds", type=float, default=None)
    p.add_argument("--sim-exit-code", type=int, default=0)
    p.add_argument("--log-dir", default=None, help="container logs of --runtime process")
    p.add_argument("--restart-backoff", type=float, default=10.0)
    p.add_argument("--max-workers", type=int, default=64)
    p.add_argument(
        "--partition-file",
        default=None,
        help="while this file exists every agent refuses lifecycle and health calls (UNAVAILABLE; "
        "the file holding 'hang': no answer until the deadline), as in a network partition",
    )
    p.add_argument("--tls-cert", default=None, help="serve mTLS with this certificate (for *.agent.vkec2)")
    p.add_argument("--tls-key", default=None, help="the key of --tls-cert")
    p.add_argument("--tls-client-ca", default=None, help="require client certificates of this CA")
    p.add_argument(
        "--identity-key", default=None, help="RSA test key signing identity documents (with --tls-cert)"
    )
    p.add_argument("--account", default=TEST_ACCOUNT, help="account ID in identity documents")
    p.add_argument("--log-level", default="INFO")
    return p


class Simulator:
    """The simulator's server: an inventory, a host of virtual agents and one plaintext listener."""

    def __init__(self, args: argparse.Namespace) -> None:
        outcome = SimOutcome(
            start_delay=args.sim_start_delay, run_seconds=args.sim_run_seconds, exit_code=args.sim_exit_code
        )
        log_root = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="vkec2-sim-logs-"))

        def make_runtime(iid: str) -> Runtime:
            if args.runtime == "process":
                return ProcessRuntime(
                    log_root / iid,
                    pod_ip="127.0.0.1",
                    backoff_base=args.restart_backoff,
                    mount_root=log_root / "mounts",  # never the machine's own paths
                )
            return SimRuntime(outcome, pod_ip="127.0.0.1")

        self.inventory = Ec2Inventory(
            args.ec2_endpoint,
            args.region,
            refresh_interval=args.refresh_interval,
            miss_refresh=args.miss_refresh,
            on_refresh=self._pruned,
        )
        self._creds: grpc.ServerCredentials | None = None
        tls: SimBootstrap | None = None
        if args.tls_cert or args.tls_key or args.tls_client_ca or args.identity_key:
            if not (args.tls_cert and args.tls_key and args.tls_client_ca and args.identity_key):
                raise ValueError("--tls-cert, --tls-key, --tls-client-ca and --identity-key go together")
            self._creds = grpc.ssl_server_credentials(
                [(Path(args.tls_key).read_bytes(), Path(args.tls_cert).read_bytes())],
                root_certificates=Path(args.tls_client_ca).read_bytes(),
                require_client_auth=True,
            )
            signer = DocumentSigner.load(args.identity_key)
            tls = SimBootstrap(signer, args.region, self.inventory.user_data, args.account)
        self.host = SimulatorHost(self.inventory, args.boot_delay, make_runtime, args.region, tls)
        self._executor = futures.ThreadPoolExecutor(
            max_workers=args.max_workers, thread_name_prefix="vkec2-sim"
        )
        simulation = Simulation(Partition(args.partition_file))
        self.server = make_server(self._executor, self.host, lifecycle=True, extension=simulation)
        self._listen = args.listen
        self.port = 0
        self.address = args.listen

    def _pruned(self, running: set[str]) -> None:
        self.host.prune(running)

    def start(self) -> None:
        """Take a first inventory, then listen: once the port is open, known instances answer."""
        try:
            self.inventory.refresh()
        except Exception as exc:  # EC2 may come up later; a miss refreshes again
            log.warning("first DescribeInstances failed: %s", exc)
        if self._creds is not None:
            self.port = self.server.add_secure_port(self._listen, self._creds)
        else:
            self.port = self.server.add_insecure_port(self._listen)
        if not self.port:
            raise OSError(f"cannot listen on {self._listen}")
        self.address = f"{self._listen.rpartition(':')[0]}:{self.port}"
        self.inventory.run_background()
        self.server.start()

    def stop(self, grace: float = 1.0) -> None:
        self.inventory.stop()
        self.server.stop(grace).wait()
        self.host.prune(set())
        self._executor.shutdown(wait=False)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        sim = Simulator(args)
        sim.start()
    except (OSError, ValueError) as exc:
        print(f"vkec2 agent-sim: {exc}", file=sys.stderr)
        return 1
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(
        f"vkec2 agent-sim listening on {sim.address} ({'mTLS' if args.tls_cert else 'plaintext'}) "
        f"for EC2 at {args.ec2_endpoint}; "
        f"{sim.inventory.count()} running instances",
        file=sys.stderr,
        flush=True,
    )
    stopped.wait()
    sim.stop()
    return 0
