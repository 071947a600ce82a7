"""``vkec2 producer``: run one virtual node (Kubernetes mode) or a manifest directory (standalone mode).

This module takes the options of :mod:`producer.options`, loads the fleet configuration, builds
the parts (Redis store, Celery apps for publishing and for pinging workers, Kubernetes client) and
runs the loops in threads until SIGTERM/SIGINT: in Kubernetes mode the node registration, then the
pod watch (:mod:`producer.pods`), the status outbox consumer (:mod:`producer.outbox` feeding
:mod:`producer.status`, started after the first full pod list) with the periodic status resync, the
heartbeat (:mod:`producer.lease`, which also checks the Redis epoch, :mod:`producer.epoch`) and the
grace-period sweeper (:mod:`producer.deletion`); in standalone mode the manifest poller
(:mod:`producer.standalone`), the epoch check and the outbox consumer; in both modes the kubelet
API (:mod:`producer.kubelet`) unless ``--no-kubelet``. On SIGTERM in Kubernetes mode a producer
whose StatefulSet was scaled down below its ordinal (:func:`producer.scaledown.check`) drains its
own node before exiting (:meth:`Producer.drain_if_scaled_down`: every loop but the outbox consumer
stops first, since the watch and the heartbeat would fight the drain while statuses must still
flow; exit status 1 when the drain failed). Bad flags or configuration print one clear error and
exit with status 2.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from celery import Celery

from producer.options import Options, default_node_name, node_name, parse_args, valid_node_name
from vkec2.config import Settings, load_settings
from vkec2.errors import ConfigError
from vkec2.store.redis_store import Store

if TYPE_CHECKING:
    from producer.content import Report
    from producer.fleet import FleetLink
    from producer.kubelet.auth import Gate
    from producer.outbox import OutboxConsumer, StatusSink
    from producer.refs import Lookup

log = logging.getLogger("producer")


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
        self.outbox_stop = threading.Event()  # Kubernetes mode: set after a scale-down drain
        self.outbox_thread: threading.Thread | None = None
        self.threads: list[threading.Thread] = []
        self.ready = threading.Event()
        self.failed = False

    def _thread(
        self, name: str, target: Callable[[threading.Event], None], stop: threading.Event | None = None
    ) -> threading.Thread:
        def run() -> None:
            try:
                target(self.stop_event if stop is None else stop)
            except Exception:
                log.exception("%s stopped with an error", name)
                self.failed = True
                self.stop_event.set()

        thread = threading.Thread(target=run, name=f"producer-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)
        return thread

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
        server = KubeletServer(
            self.store,
            self.node,
            self.settings.agent,
            tls,
            address=address,
            port=opts.kubelet_port or self.settings.node.kubelet_port,
            gate=self._kubelet_gate(address),
            stats=self.settings.kubelet_stats,
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

    def _kubelet_gate(self, address: str) -> Gate:
        """Who the kubelet API serves: webhook authn/authz in Kubernetes mode (producer/kubelet/auth.py)."""
        from producer.kube import KubeTarget, build_api_client
        from producer.kubelet.auth import (
            AllowAuthenticated,
            Authenticator,
            Gate,
            StreamLimits,
            WebhookAuthorizer,
        )
        from producer.kubelet.reviews import KubeReviewer

        opts = self.opts
        limits = StreamLimits(opts.kubelet_max_streams_per_client, opts.kubelet_max_streams)
        x509 = opts.kubelet_client_ca is not None
        if opts.manifests is not None:  # standalone: no API server to ask
            if not x509:
                if address not in ("127.0.0.1", "::1"):
                    log.warning("kubelet API on %s without --kubelet-client-ca: served to anyone", address)
                return Gate(None, AllowAuthenticated(), limits)
            return Gate(Authenticator(x509=True), AllowAuthenticated(), limits)
        if opts.kubelet_insecure_no_auth:
            log.warning(
                "INSECURE: --kubelet-insecure-no-auth: the kubelet API on %s serves logs, exec and /pods "
                "of every pod to anyone who reaches it",
                address,
            )
            return Gate(None, AllowAuthenticated(), limits)
        target = KubeTarget(
            in_cluster=opts.in_cluster,
            kubeconfig=opts.kubeconfig,
            context=opts.kube_context,
            host=opts.kube_host,
        )
        reviewer = KubeReviewer(build_api_client(target))
        authn = Authenticator(
            x509=x509,
            reviewer=reviewer if opts.kubelet_token_webhook else None,
            token_ttl=opts.kubelet_token_cache_ttl,
        )
        authz = WebhookAuthorizer(reviewer, opts.kubelet_authz_allowed_ttl, opts.kubelet_authz_denied_ttl)
        return Gate(authn, authz, limits)

    def _start_standalone(self, directory: Path) -> None:
        from producer.epoch import EpochWatch
        from producer.fleet import FleetLink
        from producer.node import NodeConfig, labels
        from producer.standalone import ManifestSource, StandaloneSink

        link = FleetLink(self.store, self.app, self.node)
        self.epoch = EpochWatch(self.store, self.node)
        node_labels = labels(NodeConfig.of(self.settings, name=self.node))
        self.source = ManifestSource(directory, link, self.opts.manifest_interval, self.epoch, node_labels)
        self._start_content(link, self.source.objects, _log_waiting)
        self.consumer = self._consumer(StandaloneSink(self.store))
        log.info("standalone producer for node %s: manifests in %s", self.node, directory)
        self._thread("manifests", self.source.run)
        self._thread("epoch", lambda stop: self.epoch.run(stop, self.opts.lease_interval))
        self._thread("outbox", lambda stop: self.consumer.run(stop, self.source.synced))
        self.ready.set()

    def _start_kube(self) -> None:
        from producer.deletion import Deleter
        from producer.epoch import EpochWatch
        from producer.fleet import FleetLink
        from producer.kube import Kube, KubeError, KubeTarget, build_api_client
        from producer.lease import HealthProbe, Heartbeat, LeaseKeeper
        from producer.node import NodeConfig, NodeKeeper
        from producer.notices import EvictionNotice
        from producer.pods import PodSync, PodWatcher
        from producer.status import KubeStatusSink
        from vkec2.contract import LABEL_ARCH
        from vkec2.domain.citizen import mixed_arches

        opts, settings = self.opts, self.settings
        citizen = settings.kubernetes
        target = KubeTarget(
            in_cluster=opts.in_cluster,
            kubeconfig=opts.kubeconfig,
            context=opts.kube_context,
            host=opts.kube_host,
        )
        self.kube = Kube(build_api_client(target))
        cfg = NodeConfig.of(
            settings,
            name=self.node,
            kubelet_port=opts.kubelet_port or settings.node.kubelet_port,
            internal_ip=opts.node_ip or self.env.get("POD_IP", ""),
        )
        mixed = mixed_arches(settings)
        if mixed:
            log.warning(
                "node %s is labelled %s=%s but may launch %s of the other architecture: run one node "
                "per architecture or set kubernetes.arch",
                self.node,
                LABEL_ARCH,
                cfg.arch,
                ", ".join(mixed),
            )
        self.node_keeper = NodeKeeper(self.kube, cfg, opts.node_status_interval)
        self.deleter = Deleter(self.kube, self.store, opts.deletion_slack)
        link = FleetLink(self.store, self.app, self.node)
        from producer.content import KubeLookup, kube_report

        self._start_content(link, KubeLookup(self.kube), kube_report(self.kube, self.node))
        self.epoch = EpochWatch(self.store, self.node, on_loss=self.kube.abort_watches)
        self.watcher = PodWatcher(
            self.kube,
            PodSync(
                link, self.deleter, EvictionNotice(self.kube, self.node) if citizen.eviction_warning else None
            ),
            self.node,
            opts.watch_timeout,
            self.epoch,
        )
        self.sink = KubeStatusSink(self.kube, self.store, self.node, self.deleter)
        self.consumer = self._consumer(self.sink)
        probe = HealthProbe(
            self.store,
            self.control_app,
            ping_timeout=opts.ping_timeout,
            outbox_stalled=lambda: self.consumer.stalled(opts.outbox_stall),
        )
        self.lease = LeaseKeeper(self.kube, self.node, opts.lease_duration)
        self.heartbeat = Heartbeat(
            probe,
            self.lease,
            self.node_keeper,
            self.store,
            interval=opts.lease_interval,
            beat_liveness_seconds=settings.beat_liveness_seconds(),
            epoch=self.epoch,
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
            consume = self.consumer.run
            synced = self.watcher.synced
            self.outbox_thread = self._thread("outbox", lambda s: consume(s, synced), self.outbox_stop)
            interval = opts.status_resync_interval
            self._thread("resync", lambda s: self.sink.run_resync(s, interval, self.watcher.synced))
            self._thread("heartbeat", self.heartbeat.run)
            self._thread("sweeper", self._sweep)
            self.ready.set()

        log.info("producer for node %s (cluster %s)", self.node, settings.cluster_name)
        self._thread("register", register_then_run)

    def _start_content(self, link: FleetLink, lookup: Lookup, report: Report) -> None:
        """Resolve and seal what pods reference (producer/content.py); retry and refresh it."""
        from producer.content import PodContent
        from vkec2.domain.sealed import Sealer

        try:
            keys = self.settings.secrets.all_keys()
        except OSError as exc:
            raise ConfigError(f"secrets.key_file cannot be read: {exc}") from None
        content = PodContent(lookup, Sealer(keys) if keys else None, report)
        link.content = content
        interval = self.settings.secrets.refresh_seconds
        self._thread("content", lambda stop: content.run(stop, link, interval))

    def _consumer(self, sink: StatusSink) -> OutboxConsumer:
        from producer.outbox import OutboxConsumer

        return OutboxConsumer(
            self.store,
            self.node,
            sink,
            claim_idle=self.opts.outbox_claim_idle,
            retry_interval=self.opts.outbox_retry_interval,
            max_attempts=self.opts.outbox_max_attempts,
        )

    def _sweep(self, stop: threading.Event) -> None:
        while not stop.wait(1.0):
            try:
                self.deleter.sweep()
            except Exception:
                log.exception("deletion sweep failed")

    def drain_if_scaled_down(self, join_timeout: float = 10.0) -> bool:
        """After SIGTERM: drain this node if its StatefulSet was scaled down; False when that failed."""
        from producer.drain import NodeDrain
        from producer.fleet import FleetLink
        from producer.kube import KubeError
        from producer.scaledown import check
        from vkec2.errors import Vkec2Error
        from vkec2.store.redis_store import StoreError

        kube = getattr(self, "kube", None)
        if kube is None:
            return True  # standalone mode: no StatefulSet, nothing to drain
        verdict = check(kube, self.env)
        if not verdict.drain:
            log.info("not draining node %s: %s", self.node, verdict.reason)
            return True
        log.warning("draining node %s before exiting: %s", self.node, verdict.reason)
        self.stop_event.set()
        kube.abort_watches()
        deadline = time.monotonic() + join_timeout
        for thread in [t for t in self.threads if t is not self.outbox_thread]:
            thread.join(max(0.0, deadline - time.monotonic()))
        try:
            report = NodeDrain(kube, FleetLink(self.store, self.app, self.node)).run(self.opts.drain_timeout)
        except (Vkec2Error, KubeError, StoreError) as exc:
            log.error("drain of node %s failed: %s (`vkec2 node drain` carries on)", self.node, exc)
            return False
        log.info("node %s drained: %d pod(s) deleted", self.node, len(report.pods))
        return True

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        self.outbox_stop.set()
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


def _log_waiting(pod: Mapping[str, Any], reason: str, message: str) -> None:
    """Standalone mode has no pod status to write: a pod waiting for a ConfigMap/Secret is logged."""
    meta = pod.get("metadata") or {}
    log.warning("pod %s/%s waits: %s: %s", meta.get("namespace"), meta.get("name"), reason, message)


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

    signals: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        signals.append(signum)
        producer.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    drained = True
    try:
        producer.start()
        producer.stop_event.wait()
        if signals[:1] == [signal.SIGTERM]:  # what Kubernetes sends; Ctrl-C never drains
            drained = producer.drain_if_scaled_down()
    finally:
        producer.stop()
    return 1 if producer.failed or not drained else 0


if __name__ == "__main__":
    sys.exit(main())
