"""``/exec``, ``/attach`` and ``/portForward`` over SPDY/3.1, the way the API server reaches a kubelet.

The upgrade (``Connection: Upgrade``, ``Upgrade: SPDY/3.1``) negotiates the sub-protocol from the
client's ``X-Stream-Protocol-Version`` values, first supported wins: ``v5``/``v4``/``v3``/``v2``
``.channel.k8s.io`` or ``channel.k8s.io`` for a remote command, ``portforward.k8s.io`` for port
forwarding. Then the client opens streams named by their ``streamType`` header.

A remote command (:class:`RemoteCommand`) waits for the streams the query asked for (error, stdin,
stdout, stderr unless tty, resize with tty from v3), runs the agent's Exec stream (or, for attach,
follows the main process's output), copies stdin and terminal sizes in and output out, and ends
with the status on the error stream: from v4 a ``metav1.Status`` JSON (``Success``, or ``Failure``
with ``NonZeroExitCode`` and an ``ExitCode`` cause), before v4 a plain-text message on failure.
Port forwarding (:class:`PortForward`) pairs each ``error`` and ``data`` stream by their
``requestID`` header and pipes the data stream through the agent's PortForward stream to
``127.0.0.1:<port>`` on the instance; a failure is written on the pair's error stream.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

from producer.kubelet import spdy
from producer.kubelet.duplex import Duplex
from producer.kubelet.exec import exit_status
from producer.kubelet.pods import PodStreams, container_names
from producer.kubelet.spdy_conn import SpdyConnection, Stream
from producer.kubelet.wire import HttpError, Query, bad_request, remote_command_query

log = logging.getLogger("producer.kubelet")

REMOTE_COMMAND = (
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
)
PORT_FORWARD = ("portforward.k8s.io",)
STREAM_WAIT = 30.0
"""How long the expected streams may take to arrive (the kubelet's stream creation timeout)."""
LINGER = 5.0
"""How long the client has to close the connection after everything was sent."""

CommandStart = Callable[[Iterable[bytes | tuple[int, int]] | None], Iterable[tuple[str, bytes | int]]]
"""Starts the command with its input (stdin bytes and (width, height) terminal sizes) or none.

It yields (``stdout``|``stderr``, bytes) and last (``exit``, code).
"""
PortForwarder = Callable[[int, Iterable[bytes]], Iterator[bytes]]
"""Connects to a port on the instance (raising if it cannot), then yields what the port sends."""


def is_spdy(handler: BaseHTTPRequestHandler) -> bool:
    return (handler.headers.get("Upgrade") or "").strip().lower().startswith("spdy/")


def negotiate(handler: BaseHTTPRequestHandler, supported: tuple[str, ...]) -> str:
    """The sub-protocol: the first of the client's that this server supports; none in common is a 403."""
    upgrade = (handler.headers.get("Upgrade") or "").strip()
    if upgrade.lower() != "spdy/3.1" or "upgrade" not in (handler.headers.get("Connection") or "").lower():
        raise bad_request(f"unable to upgrade: only SPDY/3.1 is supported here, not {upgrade!r}")
    offered = [
        p.strip()
        for value in handler.headers.get_all("X-Stream-Protocol-Version") or []
        for p in value.split(",")
        if p.strip()
    ]
    if not offered:
        return supported[-1]  # a client from before negotiation speaks the oldest protocol
    chosen = next((p for p in offered if p in supported), None)
    if chosen is None:
        raise HttpError(
            403,
            "Forbidden",
            f"unable to upgrade: unable to negotiate protocol: client supports {offered}, server supports "
            f"{list(supported)}",
        )
    return chosen


def upgrade(handler: BaseHTTPRequestHandler, protocol: str) -> Duplex:
    handler.send_response(101)
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Upgrade", "SPDY/3.1")
    handler.send_header("X-Stream-Protocol-Version", protocol)
    handler.end_headers()
    handler.close_connection = True
    return Duplex(handler.connection)


def _linger(conn: SpdyConnection, done: threading.Event) -> None:
    """End the connection if the client has not closed it ``LINGER`` seconds after our last frame."""
    if not done.wait(LINGER):
        conn.end()


class RemoteCommand:
    """One exec or attach over SPDY: streams in, the command's output out, the status last."""

    def __init__(
        self,
        duplex: Duplex,
        protocol: str,
        start: CommandStart,
        command: list[str],
        *,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        tty: bool,
    ) -> None:
        self.protocol, self.start, self.command = protocol, start, list(command)
        self.version = int(protocol[1]) if protocol.startswith("v") else 1
        self.tty = tty
        self.expected = {"error"} | {k for k, on in (("stdin", stdin), ("stdout", stdout)) if on}
        if stderr and not tty:
            self.expected.add("stderr")
        if tty and self.version >= 3:
            self.expected.add("resize")
        self.streams: dict[str, Stream] = {}
        self.ready = threading.Event()
        self.gone = threading.Event()
        self.conn = SpdyConnection(duplex, self._on_stream)
        self.input: queue.SimpleQueue[bytes | tuple[int, int] | None] = queue.SimpleQueue()

    def run(self) -> None:
        pump = threading.Thread(target=self._pump, name="kubelet-spdy-exec", daemon=True)
        pump.start()
        try:
            self.conn.run()
        finally:
            self.gone.set()
            self.ready.set()
            self.input.put(None)

    def _on_stream(self, stream: Stream) -> None:
        kind = stream.kind
        if kind not in ("error", "stdin", "stdout", "stderr", "resize") or kind in self.streams:
            log.info("exec client opened an unexpected stream %r", kind)
            self.conn.send(spdy.rst_stream(stream.id, spdy.REFUSED_STREAM))
            return
        self.streams[kind] = stream
        if self.expected <= set(self.streams):
            self.ready.set()

    def _inputs(self) -> Iterator[bytes | tuple[int, int]]:
        while True:
            item = self.input.get()
            if item is None:
                return
            yield item

    def _copy_stdin(self, stream: Stream) -> None:
        for data in stream:
            self.input.put(data)
        self.input.put(None)

    def _copy_resize(self, stream: Stream) -> None:
        decoder, buf = json.JSONDecoder(), ""
        for data in stream:
            buf += data.decode(errors="replace")
            while buf.strip():
                try:
                    size, end = decoder.raw_decode(buf.lstrip())
                except ValueError:
                    break  # an incomplete object: wait for more
                buf = buf.lstrip()[end:]
                if isinstance(size, dict):
                    width, height = size.get("Width"), size.get("Height")
                    if (
                        isinstance(width, int)
                        and isinstance(height, int)
                        and 0 <= width < 65536
                        and 0 <= height < 65536
                    ):
                        self.input.put((width, height))
            if len(buf) > 4096:
                log.info("exec client sent an unreadable terminal size: %r", buf[:100])
                buf = ""

    def _pump(self) -> None:
        arrived = self.ready.wait(STREAM_WAIT) and not self.gone.is_set()
        if not arrived:
            if not self.gone.is_set():
                self._finish(
                    {
                        "status": "Failure",
                        "reason": "Timeout",
                        "message": "timed out waiting for client streams",
                    }
                )
            return
        for kind, copy in (("stdin", self._copy_stdin), ("resize", self._copy_resize)):
            stream = self.streams.get(kind)
            if stream is not None:
                threading.Thread(
                    target=copy, args=(stream,), name=f"kubelet-spdy-{kind}", daemon=True
                ).start()
        stdout, stderr = self.streams.get("stdout"), self.streams.get("stderr")
        wants_input = "stdin" in self.streams or "resize" in self.streams
        status: dict[str, Any]
        try:
            code = -1
            for kind, payload in self.start(self._inputs() if wants_input else None):
                if kind == "exit" and isinstance(payload, int):
                    code = payload
                    break
                if isinstance(payload, bytes) and payload:
                    target = stdout if kind == "stdout" else stderr
                    if target is not None:
                        target.write(payload)
            status = exit_status(code, self.command)
        except Exception as exc:
            if not self.gone.is_set():
                log.info("exec over SPDY failed: %s", exc)
            status = {"metadata": {}, "status": "Failure", "reason": "InternalError", "message": str(exc)}
        self._finish(status)

    def _finish(self, status: dict[str, Any]) -> None:
        self.input.put(None)
        for kind in ("stdout", "stderr"):
            stream = self.streams.get(kind)
            if stream is not None:
                stream.close()
        error = self.streams.get("error")
        if error is not None:
            if self.version >= 4:
                error.write(json.dumps({"metadata": {}, **status}).encode())
            elif status.get("status") != "Success":
                error.write(str(status.get("message") or "").encode())
            error.close()
        _linger(self.conn, self.gone)


class PortForward:
    """One port-forward connection: any number of (error, data) stream pairs, each one TCP connection."""

    def __init__(self, duplex: Duplex, forward: PortForwarder, pod: str) -> None:
        self.forward, self.pod = forward, pod
        self.pairs: dict[str, dict[str, Stream]] = {}
        self.conn = SpdyConnection(duplex, self._on_stream)

    def run(self) -> None:
        self.conn.run()

    def _on_stream(self, stream: Stream) -> None:
        kind = stream.kind
        if kind not in ("error", "data"):
            log.info("port-forward client opened an unexpected stream %r", kind)
            self.conn.send(spdy.rst_stream(stream.id, spdy.REFUSED_STREAM))
            return
        # Clients before requestID open the error stream, then its data stream (the next id).
        key = stream.header("requestid") or str(stream.id if kind == "error" else stream.id - 2)
        pair = self.pairs.setdefault(key, {})
        if kind in pair:
            self.conn.send(spdy.rst_stream(stream.id, spdy.PROTOCOL_ERROR))
            return
        pair[kind] = stream
        if len(pair) == 2:
            del self.pairs[key]
            threading.Thread(
                target=self._serve, args=(pair,), name="kubelet-port-forward", daemon=True
            ).start()

    def _serve(self, pair: dict[str, Stream]) -> None:
        error, data = pair["error"], pair["data"]
        text = data.header("port")
        try:
            try:
                port = int(text)
            except ValueError:
                raise ValueError(f"invalid port {text!r}: not a number") from None
            if not 1 <= port <= 65535:
                raise ValueError(f"invalid port {port}: must be between 1 and 65535")
            for chunk in self.forward(port, data):
                data.write(chunk)
        except Exception as exc:
            log.info("port-forward to %s port %s failed: %s", self.pod, text, exc)
            error.write(f"error forwarding port {text} to pod {self.pod}: {exc}".encode())
        finally:
            data.close()
            error.close()


def serve_remote_command(
    handler: BaseHTTPRequestHandler,
    api: PodStreams,
    namespace: str,
    name: str,
    uid: str | None,
    container: str,
    query: Query,
    *,
    attach: bool,
) -> None:
    """Answer an exec or (``attach``) an attach over SPDY; refusals before the upgrade are raised."""
    protocol = negotiate(handler, REMOTE_COMMAND)
    asked = remote_command_query(query, attach=attach)
    command, tty = asked.command, asked.tty
    want_stdin, want_stdout, want_stderr = asked.stdin, asked.stdout, asked.stderr
    record = api.find(namespace, name, uid)
    target = api.target(record, container)
    client = api.agent_client()
    try:
        client.status(target)

        def run(stdin: Iterable[bytes | tuple[int, int]] | None) -> Iterator[tuple[str, bytes | int]]:
            return client.exec_stream(target, container, command, stdin=stdin, tty=tty, open_stdin=want_stdin)

        def follow(stdin: Iterable[bytes | tuple[int, int]] | None) -> Iterator[tuple[str, bytes | int]]:
            if want_stdin or tty:
                raise AttachUnsupported(
                    f"cannot attach to the stdin or terminal of container {container} in pod "
                    f"{namespace}/{name}: "
                    "its main process was started with stdin closed and no terminal (vkec2); attach "
                    "without -i/-t to follow its output, or use kubectl exec"
                )
            for chunk in client.logs(target, container, follow=True, tail_lines=0):
                yield "stdout", chunk
            yield "exit", 0

        duplex = upgrade(handler, protocol)
        session = RemoteCommand(
            duplex,
            protocol,
            follow if attach else run,
            command,
            stdin=want_stdin,
            stdout=want_stdout,
            stderr=want_stderr,
            tty=tty,
        )
        api.track(duplex, True)
        try:
            session.run()
        finally:
            api.track(duplex, False)
    finally:
        client.close()


class AttachUnsupported(Exception):
    """The container cannot be attached to as asked (its message goes on the error stream)."""


def serve_port_forward(
    handler: BaseHTTPRequestHandler, api: PodStreams, namespace: str, name: str, uid: str | None
) -> None:
    """Answer a port-forward request over SPDY; refusals before the upgrade are raised."""
    protocol = negotiate(handler, PORT_FORWARD)
    record = api.find(namespace, name, uid)
    names = container_names(record.spec)
    target = api.target(record, names[0] if names else "")  # one instance serves the whole pod
    client = api.agent_client()
    try:
        client.status(target)
        duplex = upgrade(handler, protocol)
        session = PortForward(
            duplex, lambda port, data: client.port_forward(target, port, data), f"{namespace}/{name}"
        )
        api.track(duplex, True)
        try:
            session.run()
        finally:
            api.track(duplex, False)
    finally:
        client.close()
