"""The producer's command line: its options, their defaults and the checks that refuse bad ones.

:func:`parse_args` turns ``vkec2 producer`` flags into :class:`Options` (timings default to the
production values) and stops with a message naming the flag when one is wrong (exit status 2);
:func:`node_name` picks the virtual node's name (``--node-name``, else ``node.name``, else
``<cluster>-<StatefulSet ordinal>``).
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vkec2.config import Settings

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
    outbox_retry_interval: float = 1.0
    outbox_max_attempts: int = 5
    status_resync_interval: float = 300.0
    watch_timeout: int = 300
    deletion_slack: float = 0.0
    manifest_interval: float = 1.0
    drain_timeout: float = 540.0
    log_level: str = "INFO"
    kubelet: bool = True
    kubelet_port: int | None = None
    kubelet_address: str | None = None
    kubelet_cert: str | None = None
    kubelet_key: str | None = None
    kubelet_client_ca: str | None = None
    kubelet_token_webhook: bool = False
    kubelet_insecure_no_auth: bool = False
    kubelet_token_cache_ttl: float = 120.0
    kubelet_authz_allowed_ttl: float = 300.0
    kubelet_authz_denied_ttl: float = 30.0
    kubelet_max_streams: int = 256
    kubelet_max_streams_per_client: int = 128


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


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


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
        help="seconds the status outbox consumer may stand still before the node is NotReady",
    )
    p.add_argument(
        "--outbox-claim-idle",
        type=_positive(float),
        default=30.0,
        help="seconds before status events left by a dead producer are taken over",
    )
    p.add_argument(
        "--outbox-retry-interval",
        type=_positive(float),
        default=1.0,
        help="seconds before a failed status event is tried again (doubling per failure, at most 30)",
    )
    p.add_argument(
        "--outbox-max-attempts",
        type=_positive(int),
        default=5,
        help="failures (transient API errors aside) before a status event is dead-lettered",
    )
    p.add_argument(
        "--status-resync-interval",
        type=_positive(float),
        default=300.0,
        help="seconds between rewrites of every out-of-date pod status from the pod records",
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
    p.add_argument(
        "--drain-timeout",
        type=_positive(float),
        default=540.0,
        help="on SIGTERM after a StatefulSet scale-down below this pod's ordinal: seconds to wait for "
        "the node's instances to be terminated before giving up (keep it under the pod's "
        "terminationGracePeriodSeconds)",
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
        "--kubelet-client-ca",
        help="authenticate client certificates signed by this CA (the API server's kubelet client CA)",
    )
    _add_kubelet_auth_flags(kubelet)
    return p


def _add_kubelet_auth_flags(group: argparse._ArgumentGroup) -> None:
    """Authentication, authorization and caps of the kubelet API (producer/kubelet/auth.py)."""
    group.add_argument(
        "--kubelet-token-webhook",
        action="store_true",
        help="authenticate bearer tokens with a TokenReview (Kubernetes mode)",
    )
    group.add_argument(
        "--kubelet-insecure-no-auth",
        action="store_true",
        help="INSECURE: in Kubernetes mode, serve logs, exec and /pods to anyone who reaches the port",
    )
    group.add_argument(
        "--kubelet-token-cache-ttl",
        type=_non_negative,
        default=120.0,
        help="seconds a TokenReview answer is reused (0: never)",
    )
    group.add_argument(
        "--kubelet-authz-allowed-ttl",
        type=_non_negative,
        default=300.0,
        help="seconds an allowing SubjectAccessReview is reused (0: never)",
    )
    group.add_argument(
        "--kubelet-authz-denied-ttl",
        type=_non_negative,
        default=30.0,
        help="seconds a denying SubjectAccessReview is reused (0: never)",
    )
    group.add_argument(
        "--kubelet-max-streams",
        type=_positive(int),
        default=256,
        help="concurrent requests (log streams, exec sessions...) served in total; more get a 429",
    )
    group.add_argument(
        "--kubelet-max-streams-per-client",
        type=_positive(int),
        default=128,
        help="concurrent requests served per client (user, or address without authentication); everything "
        "through the API server is one client, its kubelet client certificate",
    )


def _check_kubelet_auth(parser: argparse.ArgumentParser, opts: Options) -> None:
    """Kubernetes mode needs an authentication method for the kubelet API unless told it is insecure."""
    if not opts.kubelet:
        return
    if opts.manifests is not None and opts.kubelet_token_webhook:
        parser.error("--kubelet-token-webhook needs an API server: not in standalone mode (--manifests)")
    has_auth = opts.kubelet_client_ca is not None or opts.kubelet_token_webhook
    if opts.kubelet_insecure_no_auth and has_auth:
        parser.error(
            "--kubelet-insecure-no-auth contradicts --kubelet-client-ca/--kubelet-token-webhook: choose one"
        )
    if opts.manifests is None and not has_auth and not opts.kubelet_insecure_no_auth:
        parser.error(
            "the kubelet API needs an authentication method in Kubernetes mode: give --kubelet-client-ca "
            "FILE (the CA of the API server's kubelet client certificate) and/or --kubelet-token-webhook; "
            "--kubelet-insecure-no-auth serves logs and exec of every pod to anyone who reaches the port"
        )
    if opts.kubelet_max_streams_per_client > opts.kubelet_max_streams:
        parser.error("--kubelet-max-streams-per-client must not exceed --kubelet-max-streams")


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
    _check_kubelet_auth(parser, opts)
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
