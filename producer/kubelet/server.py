"""The kubelet API's HTTPS server: listening, one thread per connection, routing, error answers.

Stdlib :mod:`http.server` (a :class:`~http.server.ThreadingHTTPServer`) behind :mod:`ssl`; the TLS
handshake runs in the connection's thread, so a slow client never blocks accepting others.
Every request but ``/healthz`` first passes the server's :class:`~producer.kubelet.auth.Gate`
(authentication, authorization, stream caps). :class:`KubeletHandler` routes ``/healthz``,
``/pods``, ``/containerLogs`` (:mod:`.logs`), ``/exec`` (:mod:`.exec` over WebSocket, :mod:`.streaming`
over SPDY), ``/attach`` and ``/portForward`` (:mod:`.streaming`), ``/stats/summary``,
``/metrics/resource`` and ``/metrics`` (:mod:`.stats`, :mod:`.summary`) and turns
:class:`~producer.kubelet.wire.HttpError` and agent errors into answers. :class:`KubeletServer`
holds what the handlers share: the node's records, a fresh :class:`~vkec2.agent_client.AgentClient`
per stream, the gate, and the open streams, which ``stop()`` ends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from producer.kubelet.auth import AllowAuthenticated, Gate
from producer.kubelet.duplex import Duplex
from producer.kubelet.exec import serve_exec
from producer.kubelet.logs import serve_logs
from producer.kubelet.pods import agent_target, find_record, pod_list
from producer.kubelet.stats import StatsCollector
from producer.kubelet.streaming import is_spdy, serve_port_forward, serve_remote_command
from producer.kubelet.summary import stats_route
from producer.kubelet.wire import HttpError, agent_http_error, bad_request, error_body
from vkec2.agent_client.client import AgentClient
from vkec2.ca import ClientTls
from vkec2.config import AgentConnection
from vkec2.config.kubelet_stats import KubeletStats
from vkec2.domain.agents import AgentTarget
from vkec2.domain.models import PodRecord
from vkec2.errors import AgentError
from vkec2.store.redis_store import Store

log = logging.getLogger("producer.kubelet")


class KubeletServer:
    """The HTTPS kubelet API of one node; ``start()`` binds and serves in a thread, ``stop()`` ends it."""

    def __init__(
        self,
        store: Store,
        node: str,
        agent: AgentConnection,
        tls: ssl.SSLContext,
        *,
        address: str = "0.0.0.0",
        port: int = 10250,
        gate: Gate | None = None,
        stats: KubeletStats | None = None,
    ) -> None:
        """``gate`` decides who is served; the default serves anyone (tests, loopback-only standalone).

        ``stats`` times the fan-out of the stats endpoints (defaults: :class:`KubeletStats`)."""
        self.store = store
        self.gate = gate if gate is not None else Gate(None, AllowAuthenticated())
        self.node = node
        self.agent = agent
        self.tls = tls
        self.address = address
        self.port = port
        self._client_tls: ClientTls | None = None
        self._client_tls_ready = False
        self._lock = threading.Lock()
        self._streams: set[Duplex] = set()
        self._httpd: _Httpd | None = None
        self._thread: threading.Thread | None = None
        self.started = time.time()
        self._stats_client: AgentClient | None = None
        timing = stats if stats is not None else KubeletStats()
        self.stats = StatsCollector(
            lambda: self.store.records(self.node),
            self.stats_client,
            timeout=timing.timeout_seconds,
            ttl=timing.cache_seconds,
        )

    def start(self) -> None:
        """Bind (``OSError`` if the port cannot be bound) and serve in a daemon thread."""
        httpd = _Httpd((self.address, self.port), KubeletHandler, self)
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.5}, name="kubelet-api", daemon=True
        )
        self._thread.start()
        log.info("kubelet API of node %s on https://%s:%d", self.node, self.address, self.port)

    def stop(self) -> None:
        """Stop listening and end the open log streams and exec sessions."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            streams = list(self._streams)
        for duplex in streams:
            duplex.send(None)
        if self._thread is not None:
            self._thread.join(5)
        self._httpd = None
        self.stats.close()
        with self._lock:
            client, self._stats_client = self._stats_client, None
        if client is not None:
            client.close()

    # -- helpers for the handlers ---------------------------------------------------------------
    def agent_client(self) -> AgentClient:
        """A fresh client (one channel) per stream: closing it cancels the agent call."""
        with self._lock:
            if not self._client_tls_ready:
                if self.agent.tls is not None:
                    self._client_tls = ClientTls.from_config(self.agent.tls, client_name="vkec2-producer")
                self._client_tls_ready = True
            tls = self._client_tls
        return AgentClient(self.agent, tls)

    def stats_client(self) -> AgentClient:
        """The one client (channels kept per agent) the stats scrapes share."""
        client = self._stats_client
        if client is None:
            client = self.agent_client()
            with self._lock:
                if self._stats_client is None:
                    self._stats_client = client
                else:
                    client.close()
                    client = self._stats_client
        return client

    def track(self, duplex: Duplex, on: bool) -> None:
        """Register (``on``) or forget an open stream, so that ``stop()`` can end it."""
        with self._lock:
            if on:
                self._streams.add(duplex)
            else:
                self._streams.discard(duplex)

    def find(self, namespace: str, name: str, uid: str | None = None) -> PodRecord:
        return find_record(self.store.records(self.node), self.node, namespace, name, uid)

    def target(self, record: PodRecord, container: str) -> AgentTarget:
        return agent_target(record, container)


class _Httpd(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], api: KubeletServer):
        self.api = api
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """TLS handshake in the connection's thread (a slow client never blocks accepting others)."""
        raw: socket.socket = request
        raw.settimeout(10)
        try:
            conn = self.api.tls.wrap_socket(raw, server_side=True)
        except (OSError, ValueError) as exc:
            log.debug("TLS handshake with %s failed: %s", client_address, exc)
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class KubeletHandler(BaseHTTPRequestHandler):
    """One connection's requests: routing and the simple answers; logs and exec have modules of their own."""

    protocol_version = "HTTP/1.1"
    server_version = "vkec2-kubelet"
    rbufsize = 0  # never read past the request head: the socket may become a WebSocket
    timeout = 120
    server: _Httpd

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    @property
    def api(self) -> KubeletServer:
        return self.server.api

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    # Other methods pass the gate like any request (verb from the method), then find no route.
    do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _route(self) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/")[1:]] or [""]
        try:
            if parts == ["healthz"]:
                self._send(200, b"ok", "text/plain; charset=utf-8")
                return
            peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
            with self.api.gate.admit(
                method=self.command,
                path=unquote(url.path),
                node=self.api.node,
                peer_cert=peer,
                authorization=self.headers.get("Authorization"),
                address=str(self.client_address[0]),
            ):
                self._serve(parts, parse_qs(url.query, keep_blank_values=True))
        except HttpError as err:
            self._error(err)
        except AgentError as exc:
            self._error(agent_http_error(exc))

    def _serve(self, parts: list[str], query: dict[str, list[str]]) -> None:
        """Route an admitted request."""
        if parts[0] == "pods" and parts[1:] in ([], [""]) and self.command == "GET":
            body = pod_list(self.api.store.records(self.api.node))
            self._send(200, json.dumps(body, default=str).encode(), "application/json")
        elif parts[0] == "containerLogs" and len(parts) == 4 and all(parts) and self.command == "GET":
            serve_logs(self, self.api, parts[1], parts[2], parts[3], query)
        elif parts[0] in ("exec", "attach") and len(parts) in (4, 5) and all(parts) and is_spdy(self):
            uid = parts[3] if len(parts) == 5 else None
            attach = parts[0] == "attach"
            serve_remote_command(self, self.api, parts[1], parts[2], uid, parts[-1], query, attach=attach)
        elif parts[0] == "exec" and len(parts) in (4, 5) and all(parts):
            uid = parts[3] if len(parts) == 5 else None
            serve_exec(self, self.api, parts[1], parts[2], uid, parts[-1], query)
        elif parts[0] == "portForward" and len(parts) in (3, 4) and all(parts):
            if not is_spdy(self):
                raise bad_request("port forwarding needs a SPDY/3.1 upgrade (portforward.k8s.io)")
            serve_port_forward(self, self.api, parts[1], parts[2], parts[3] if len(parts) == 4 else None)
        elif parts[0] == "attach" and len(parts) in (4, 5) and all(parts):
            raise bad_request("attach needs a SPDY/3.1 upgrade (v4.channel.k8s.io)")
        elif self.command == "GET" and (
            found := stats_route(
                parts,
                self.api.node,
                self.api.stats,
                lambda: self.api.store.records(self.api.node),
                self.api.started,
            )
        ):
            self._send(200, *found)
        else:
            raise HttpError(404, "NotFound", "404 page not found")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, err: HttpError) -> None:
        self._send(err.code, *error_body(err, self.headers.get("Accept") or ""))
