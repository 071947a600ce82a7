"""``vkec2 producer``: run one virtual node (Kubernetes mode) or a manifest directory (standalone mode).

This module parses the command line, loads the fleet configuration, builds the parts (Redis store,
Celery apps for publishing and for pinging workers, Kubernetes client) and runs the loops in
threads until SIGTERM/SIGINT: in Kubernetes mode the node registration, then the pod watch
(:mod:`producer.pods`), the status outbox consumer (:mod:`producer.status`, started only after the
first full pod list), the heartbeat (:mod:`producer.lease`) and the grace-period sweeper
(:mod:`producer.deletion`); in standalone mode the manifest poller (:mod:`producer.standalone`) and
the outbox consumer; in both modes the kubelet API (:mod:`producer.kubelet`, logs and exec) unless
``--no-kubelet``. Bad flags or configuration print one clear error and exit with status 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from celery import Celery

from vkec2.config import Settings, load_settings
from vkec2.errors import ConfigError
from vkec2.store.redis_store import Store

log = logging.getLogger("producer")

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass
class Options:
    """The producer's command-line options (timings default to the production values)."""

    config: str | None = None
    kubeconfig: str | None = None
    kube_context: str | None = None
    in_cluster: bool = False
    kube_host: str | None = None
    node_name: str | None = None
    node_ip: str | None = None
    manifests: str | None = None
    lease_duration: int = 40
    lease_interval: float = 10.0
    node_status_interval: float = 60.0
    ping_timeout: float = 1.0
    outbox_stall: float = 60.0
    outbox_claim_idle: float = 30.0
    watch_timeout: int = 300
    deletion_slack: float = 0.0
    manifest_interval: float = 1.0
    log_level: str = "INFO"
    kubelet: bool = True
    kubelet_port: int | None = None
    kubelet_address: str | None = None
    kubelet_cert: str | None = None
    kubelet_key: str | None = None
    kubelet_client_ca: str | None = None


def _positive(kind: type[float] | type[int]) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vkec2 producer",
        description="Run one vkec2 virtual node in Kubernetes, or pods from a manifest directory.",
    )
    p.add_argument("--config", help="vkec2 configuration file (default: $VKEC2_CONFIG)")
    access = p.add_mutually_exclusive_group()
    access.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, else ~/.kube/config)")
    access.add_argument("--in-cluster", action="store_true", help="use the pod's service account")
    access.add_argument("--kube-host", help="plain-HTTP API server URL without authentication (tests)")
    p.add_argument("--kube-context", help="kubeconfig context to use")
    p.add_argument("--node-name", help="virtual node name (default: node.name, else <cluster>-<ordinal>)")
    p.add_argument("--node-ip", help="the node's InternalIP (default: $POD_IP from the downward API)")
    p.add_argument("--manifests", metavar="DIR", help="standalone mode: run the pods of this directory")
    p.add_argument("--lease-duration", type=_positive(int), default=40, help="lease duration, seconds")
    p.add_argument(
        "--lease-interval",
        type=_positive(float),
        default=10.0,
        help="seconds between lease renewals and health checks (jittered by 10%%)",
    )
    p.add_argument(
        "--node-status-interval",
        type=_positive(float),
        default=60.0,
        help="seconds between node status updates when nothing changed",
    )
    p.add_argument(
        "--ping-timeout",
        type=_positive(float),
        default=1.0,
        help="seconds to wait for Celery workers to answer the health ping",
    )
    p.add_argument(
        "--outbox-stall",
        type=_positive(float),
        default=60.0,
        help="seconds a status event may stay unapplied before the node is NotReady",
    )
    p.add_argument(
        "--outbox-claim-idle",
        type=_positive(float),
        default=30.0,
        help="seconds before status events left by a dead producer are taken over",
    )
    p.add_argument(
        "--watch-timeout", type=_positive(int), default=300, help="seconds before a pod watch is restarted"
    )
    p.add_argument(
        "--deletion-slack",
        type=float,
        default=0.0,
        help="extra seconds after a pod's grace period before its object is removed anyway "
        "while the node is NotReady (no worker alive)",
    )
    p.add_argument(
        "--manifest-interval",
        type=_positive(float),
        default=1.0,
        help="seconds between scans of the manifest directory",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    kubelet = p.add_argument_group("kubelet API (logs, exec, /pods over HTTPS; see producer/kubelet/)")
    kubelet.add_argument("--no-kubelet", dest="kubelet", action="store_false", help="do not serve it")
    kubelet.add_argument("--kubelet-port", type=_positive(int), help="port (default: node.kubelet_port)")
    kubelet.add_argument(
        "--kubelet-address",
        help="listen address (default 0.0.0.0; 127.0.0.1 in standalone mode and with --kube-host)",
    )
    kubelet.add_argument("--kubelet-cert", help="serving certificate (PEM; default: one issued at start)")
    kubelet.add_argument("--kubelet-key", help="key of --kubelet-cert (PEM)")
    kubelet.add_argument(
        "--kubelet-client-ca", help="require client certificates signed by this CA (the API server's)"
    )
    return p


def parse_args(argv: Sequence[str]) -> Options:
    """Parse the command line; raises SystemExit(2) with a message on bad flags."""
    parser = build_parser()
    ns = parser.parse_args(list(argv))
    opts = Options(**{k: v for k, v in vars(ns).items()})
    if opts.manifests is not None:
        if opts.kubeconfig or opts.in_cluster or opts.kube_host:
            parser.error(
                "--manifests (standalone mode) does not talk to Kubernetes; drop the "
                "--kubeconfig/--in-cluster/--kube-host flag"
            )
        if not Path(opts.manifests).is_dir():
            parser.error(f"--manifests: {opts.manifests} is not a directory")
    if opts.node_name is not None and not valid_node_name(opts.node_name):
        parser.error(
            f"--node-name: {opts.node_name!r} is not a DNS subdomain (lowercase letters, digits, '-' and '.')"
        )
    if opts.node_ip:
        try:
            ipaddress.ip_address(opts.node_ip)
        except ValueError:
            parser.error(f"--node-ip: {opts.node_ip!r} is not an IP address")
    if opts.lease_interval >= opts.lease_duration:
        parser.error(
            f"--lease-interval ({opts.lease_interval:g}s) must be shorter than --lease-duration "
            f"({opts.lease_duration}s)"
        )
    if opts.deletion_slack < 0:
        parser.error("--deletion-slack must not be negative")
    if opts.kubelet_address:
        try:
            ipaddress.ip_address(opts.kubelet_address)
        except ValueError:
            parser.error(f"--kubelet-address: {opts.kubelet_address!r} is not an IP address")
    if opts.kubelet_port is not None and opts.kubelet_port > 65535:
        parser.error(f"--kubelet-port: {opts.kubelet_port} is not a TCP port")
    if (opts.kubelet_cert is None) != (opts.kubelet_key is None):
        parser.error("--kubelet-cert and --kubelet-key must be given together")
    for flag in ("kubelet_cert", "kubelet_key", "kubelet_client_ca"):
        path = getattr(opts, flag)
        if path is not None and not Path(path).is_file():
            parser.error(f"--{flag.replace('_', '-')}: {path} is not a file")
    return opts


def valid_node_name(name: str) -> bool:
    return len(name) <= 253 and bool(_DNS_SUBDOMAIN.fullmatch(name))


def default_node_name(cluster: str, env: Mapping[str, str]) -> str:
    """``<cluster>-<ordinal>``: the StatefulSet ordinal is the trailing number of the pod's name."""
    pod = env.get("POD_NAME") or env.get("HOSTNAME") or ""
    match = re.search(r"-(\d+)$", pod)
    ordinal = match.group(1) if match else "0"
    base = re.sub(r"[^a-z0-9-]+", "-", cluster.lower()).strip("-") or "vkec2"
    return f"{base[:240]}-{ordinal}"


def node_name(opts: Options, settings: Settings, env: Mapping[str, str]) -> str:
    return opts.node_name or settings.node.name or default_node_name(settings.cluster_name, env)


class Producer:
    """All loops of one producer, in threads; ``start()``, then ``stop()``."""

    def __init__(self, settings: Settings, opts: Options, env: Mapping[str, str] | None = None) -> None:
        from vkec2.broker.app import make_app

        self.settings = settings
        self.opts = opts
        self.env = os.environ if env is None else env
        self.node = node_name(opts, settings, self.env)
        self.store = Store.from_settings(settings)
        self.app: Celery = make_app(settings)
        self.control_app: Celery = make_app(settings)
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.ready = threading.Event()
        self.failed = False

    def _thread(self, name: str, target: Callable[[threading.Event], None]) -> None:
        def run() -> None:
            try:
                target(self.stop_event)
            except Exception:
                log.exception("%s stopped with an error", name)
                self.failed = True
                self.stop_event.set()

        thread = threading.Thread(target=run, name=f"producer-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def start(self) -> None:
        if self.opts.manifests is not None:
            self._start_standalone(Path(self.opts.manifests))
        else:
            self._start_kube()
        if self.opts.kubelet:
            self._start_kubelet()

    def _start_kubelet(self) -> None:
        """Serve the kubelet API; a port that cannot be bound stops the producer with the reason."""
        import ssl

        from producer.kubelet import KubeletServer, serving_context

        opts = self.opts
        local = opts.manifests is not None or opts.kube_host is not None
        address = opts.kubelet_address or ("127.0.0.1" if local else "0.0.0.0")
        node_ip = opts.node_ip or self.env.get("POD_IP", "")
        try:
            tls = serving_context(
                self.node,
                cert_file=opts.kubelet_cert,
                key_file=opts.kubelet_key,
                client_ca_file=opts.kubelet_client_ca,
                addresses=tuple(a for a in (address, node_ip) if a and a != "0.0.0.0"),
            )
        except (OSError, ssl.SSLError) as exc:
            log.error("kubelet API: cannot load its TLS files: %s", exc)
            self.failed = True
            self.stop_event.set()
            return
        if opts.kubelet_client_ca is None and not local:
            log.warning("kubelet API: no --kubelet-client-ca: logs and exec are served to any client")
        server = KubeletServer(
            self.store,
            self.node,
            self.settings.agent,
            tls,
            address=address,
            port=opts.kubelet_port or self.settings.node.kubelet_port,
        )
        try:
            server.start()
        except OSError as exc:
            log.error(
                "kubelet API: cannot listen on %s:%d: %s (use --kubelet-port or --no-kubelet)",
                address,
                server.port,
                exc,
            )
            self.failed = True
            self.stop_event.set()
            return
        self.kubelet = server

    def _start_standalone(self, directory: Path) -> None:
        from producer.fleet import FleetLink
        from producer.outbox import OutboxConsumer
        from producer.standalone import ManifestSource, StandaloneSink

        link = FleetLink(self.store, self.app, self.node)
        self.source = ManifestSource(directory, link, self.opts.manifest_interval)
        self.consumer = OutboxConsumer(
            self.store, self.node, StandaloneSink(self.store), claim_idle=self.opts.outbox_claim_idle
        )
        log.info("standalone producer for node %s: manifests in %s", self.node, directory)
        self._thread("manifests", self.source.run)
        self._thread("outbox", lambda stop: self.consumer.run(stop, self.source.synced))
        self.ready.set()

    def _start_kube(self) -> None:
        from producer.deletion import Deleter
        from producer.fleet import FleetLink
        from producer.kube import Kube, KubeError, KubeTarget, build_api_client
        from producer.lease import HealthProbe, Heartbeat, LeaseKeeper
        from producer.node import NodeConfig, NodeKeeper
        from producer.outbox import OutboxConsumer
        from producer.pods import PodSync, PodWatcher
        from producer.status import KubeStatusSink

        opts, settings = self.opts, self.settings
        target = KubeTarget(
            in_cluster=opts.in_cluster,
            kubeconfig=opts.kubeconfig,
            context=opts.kube_context,
            host=opts.kube_host,
        )
        self.kube = Kube(build_api_client(target))
        cfg = NodeConfig(
            name=self.node,
            cluster=settings.cluster_name,
            os=settings.node.os,
            kubelet_port=opts.kubelet_port or settings.node.kubelet_port,
            internal_ip=opts.node_ip or self.env.get("POD_IP", ""),
            cpu=settings.node.cpu,
            memory=settings.node.memory,
            pods=settings.node.pods,
        )
        self.node_keeper = NodeKeeper(self.kube, cfg, opts.node_status_interval)
        self.deleter = Deleter(self.kube, self.store, opts.deletion_slack)
        link = FleetLink(self.store, self.app, self.node)
        self.watcher = PodWatcher(self.kube, PodSync(link, self.deleter), self.node, opts.watch_timeout)
        self.consumer = OutboxConsumer(
            self.store,
            self.node,
            KubeStatusSink(self.kube, self.store, self.node, self.deleter),
            claim_idle=opts.outbox_claim_idle,
        )
        probe = HealthProbe(
            self.store,
            self.control_app,
            ping_timeout=opts.ping_timeout,
            outbox_stalled=lambda: self.consumer.stalled(opts.outbox_stall),
        )
        self.lease = LeaseKeeper(self.kube, self.node, opts.lease_duration)
        self.heartbeat = Heartbeat(
            probe, self.lease, self.node_keeper, self.store, interval=opts.lease_interval
        )
        heartbeat = self.heartbeat
        # Pod objects wait for their instance while the node is Ready (until the first beat says).
        self.deleter.fleet_alive = lambda: heartbeat.beats == 0 or heartbeat.health.ok

        def register_then_run(stop: threading.Event) -> None:
            delay = 0.5
            while not stop.is_set():
                try:
                    node = self.node_keeper.register()
                    break
                except KubeError as exc:
                    log.warning("cannot register node %s yet: %s", self.node, exc)
                    stop.wait(delay)
                    delay = min(delay * 2, 30.0)
            else:
                return
            self.lease.node_uid = str(node["metadata"]["uid"])
            self._thread("pods", self.watcher.run)
            self._thread("outbox", lambda s: self.consumer.run(s, self.watcher.synced))
            self._thread("heartbeat", self.heartbeat.run)
            self._thread("sweeper", self._sweep)
            self.ready.set()

        log.info("producer for node %s (cluster %s)", self.node, settings.cluster_name)
        self._thread("register", register_then_run)

    def _sweep(self, stop: threading.Event) -> None:
        while not stop.wait(1.0):
            try:
                self.deleter.sweep()
            except Exception:
                log.exception("deletion sweep failed")

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        kubelet = getattr(self, "kubelet", None)
        if kubelet is not None:
            kubelet.stop()
        kube = getattr(self, "kube", None)
        if kube is not None:
            kube.abort_watches()
        deadline = time.monotonic() + timeout
        for thread in list(self.threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        self.app.close()
        self.control_app.close()
        self.store.close()
        kube = getattr(self, "kube", None)
        if kube is not None:
            kube.close()
        log.info("producer of node %s stopped", self.node)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(
        level=opts.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s",
    )
    try:
        settings = load_settings(opts.config)
    except ConfigError as exc:
        print(f"vkec2 producer: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    from vkec2.observability import startup as observability

    observability.start("producer", settings, level=opts.log_level)  # logs, tracing, /metrics
    if settings.node.name is None and opts.node_name is None:
        derived = default_node_name(settings.cluster_name, os.environ)
        if not valid_node_name(derived):
            print(
                f"vkec2 producer: cannot derive a node name from cluster {settings.cluster_name!r}; "
                "set --node-name or node.name",
                file=sys.stderr,
            )
            return 2
    producer = Producer(settings, opts)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        producer.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        producer.start()
        producer.stop_event.wait()
    finally:
        producer.stop()
    return 1 if producer.failed else 0


if __name__ == "__main__":
    sys.exit(main())
