"""``/exec/{namespace}/{pod}[/{uid}]/{container}``: a Kubernetes remote-command session over WebSocket.

The upgrade is checked and answered here (``v5.channel.k8s.io`` or ``v4.channel.k8s.io``, the
client's first supported choice; older subprotocols are refused with a 400 before it; SPDY
upgrades are routed to :mod:`.streaming` instead) —
by hand, in a few lines, because :mod:`http.server` has already parsed the request that
:mod:`wsproto`'s own handshake would want as raw bytes; the accept token is wsproto's. The
WebSocket protocol after it — framing, masking, fragmentation, ping/pong, the closing
handshake, refusing broken frames — is :mod:`wsproto`'s. Every binary message starts with its
channel: 0 stdin (to the agent), 1 stdout, 2 stderr, 3 the final status, 4 resize (a JSON
``{"Width": .., "Height": ..}`` passed on to the agent's terminal), and in v5 255 "close" (``[255,
0]`` ends the command's stdin). The agent's Exec stream runs in a thread of the
session; the connection's :class:`~producer.kubelet.duplex.Duplex` carries both directions.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import generate_accept_token

from producer.kubelet.duplex import Duplex
from producer.kubelet.pods import PodStreams
from producer.kubelet.wire import Query, bad_request, remote_command_query
from vkec2.errors import AgentError

log = logging.getLogger("producer.kubelet")

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
MAX_MESSAGE = 16 * 1024 * 1024

ExecStart = Callable[[Iterable[bytes | tuple[int, int]] | None], Iterable[tuple[str, bytes | int]]]
"""Starts the command with the given input (stdin bytes and (width, height) terminal sizes) or none.

It yields (``stdout``|``stderr``, bytes) and last (``exit``, code).
"""


def serve_exec(
    handler: BaseHTTPRequestHandler,
    api: PodStreams,
    namespace: str,
    name: str,
    uid: str | None,
    container: str,
    query: Query,
) -> None:
    """Answer one exec request on ``handler``'s connection (refusals before the upgrade are raised)."""
    upgrade = (handler.headers.get("Upgrade") or "").lower()
    if upgrade != "websocket":
        raise bad_request(f"exec needs a WebSocket upgrade ({', '.join(PROTOCOLS)})")
    offered = [p.strip() for p in (handler.headers.get("Sec-WebSocket-Protocol") or "").split(",")]
    protocol = next((p for p in offered if p in PROTOCOLS), None)
    if protocol is None:
        raise bad_request(f"none of the offered subprotocols {offered} is supported: use one of {PROTOCOLS}")
    key = handler.headers.get("Sec-WebSocket-Key") or ""
    if handler.headers.get("Sec-WebSocket-Version") != "13" or not _valid_key(key):
        raise bad_request("bad WebSocket handshake (version 13 and a 16-byte key are required)")
    asked = remote_command_query(query)
    command, tty = asked.command, asked.tty
    want_stdin, want_stdout, want_stderr = asked.stdin, asked.stdout, asked.stderr
    record = api.find(namespace, name, uid)
    target = api.target(record, container)
    client = api.agent_client()
    try:
        client.status(target)
        handler.send_response(101)
        handler.send_header("Upgrade", "websocket")
        handler.send_header("Connection", "Upgrade")
        handler.send_header("Sec-WebSocket-Accept", generate_accept_token(key.encode()).decode())
        handler.send_header("Sec-WebSocket-Protocol", protocol)
        handler.end_headers()
        handler.close_connection = True

        def start(stdin: Iterable[bytes | tuple[int, int]] | None) -> Iterator[tuple[str, bytes | int]]:
            return client.exec_stream(
                target, container, list(command), stdin=stdin, tty=tty, open_stdin=want_stdin
            )

        duplex = Duplex(handler.connection)
        session = ExecSession(
            duplex,
            start,
            command,
            stdin=want_stdin,
            tty=tty,
            stdout=want_stdout,
            stderr=want_stderr and not tty,
            v5=protocol.startswith("v5."),
        )
        api.track(duplex, True)
        try:
            session.run()
        finally:
            api.track(duplex, False)
    finally:
        client.close()


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except ValueError:  # binascii.Error, or a key that is not ASCII
        return False


def exit_status(code: int, command: list[str]) -> dict[str, Any]:
    """The v4/v5 status message of channel 3 for an exit code (what kubectl turns into its exit code)."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            f"command terminated with non-zero exit code: error executing command {command}, exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


class Stdin:
    """Blocking iterator of stdin chunks and terminal sizes from the WebSocket reader; ``close()`` ends it."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[bytes | tuple[int, int] | None] = queue.SimpleQueue()

    def put(self, data: bytes | tuple[int, int]) -> None:
        self._q.put(data)

    def close(self) -> None:
        self._q.put(None)

    def __iter__(self) -> Iterator[bytes | tuple[int, int]]:
        while True:
            item = self._q.get()
            if item is None:
                return
            yield item


class ExecSession:
    """One exec: agent output → messages on channels 1/2, then the status on 3; messages in → stdin.

    :meth:`run` serves the WebSocket in the calling (connection) thread and runs the command in a
    thread of its own. The :mod:`wsproto` connection is shared by both, so every use of it holds
    one lock; what it produces is queued on the duplex in that order.
    """

    def __init__(
        self,
        duplex: Duplex,
        start: ExecStart,
        command: list[str],
        *,
        stdin: bool,
        tty: bool = False,
        stdout: bool,
        stderr: bool,
        v5: bool,
        max_message: int = MAX_MESSAGE,
    ) -> None:
        self.duplex, self.start, self.command = duplex, start, list(command)
        self.want_stdout, self.want_stderr, self.v5 = stdout, stderr, v5
        # The agent's input: stdin when asked for, and a terminal's sizes (its stdin stays closed).
        self.stdin = Stdin() if stdin or tty else None
        self.open_stdin = stdin
        self.max_message = max_message
        self._ws = Connection(ConnectionType.SERVER)
        self._lock = threading.Lock()
        self._message = bytearray()

    def run(self) -> None:
        """Until the session's end: the status sent, the peer gone, or the protocol broken."""
        pump = threading.Thread(target=self._pump, name="kubelet-exec", daemon=True)
        pump.start()
        try:
            self.duplex.run(self._on_read)
        finally:
            if self.stdin is not None:
                self.stdin.close()

    # -- out ------------------------------------------------------------------------------------
    def _emit(self, event: Event, *, end: bool = False) -> None:
        """Send ``event`` if the connection's state still allows it (lock held); ``end`` ends the duplex."""
        state = self._ws.state
        if state is ConnectionState.OPEN or (
            isinstance(event, CloseConnection) and state is ConnectionState.REMOTE_CLOSING
        ):
            self.duplex.send(self._ws.send(event))
        if end:
            self.duplex.send(None)

    def _send(self, event: Event, *, end: bool = False) -> None:
        with self._lock:
            self._emit(event, end=end)

    def _pump(self) -> None:
        status: dict[str, Any]
        try:
            code = -1
            for kind, payload in self.start(self.stdin):
                if kind == "exit" and isinstance(payload, int):
                    code = payload
                    break
                if isinstance(payload, bytes) and payload:
                    if kind == "stdout" and self.want_stdout:
                        self._send(BytesMessage(bytes([STDOUT]) + payload))
                    elif kind == "stderr" and self.want_stderr:
                        self._send(BytesMessage(bytes([STDERR]) + payload))
            status = exit_status(code, self.command)
        except AgentError as exc:
            status = {"metadata": {}, "status": "Failure", "reason": "InternalError", "message": str(exc)}
        except Exception as exc:
            log.exception("exec stream failed")
            status = {"metadata": {}, "status": "Failure", "reason": "InternalError", "message": str(exc)}
        self._send(BytesMessage(bytes([STATUS]) + json.dumps(status).encode()))
        self._send(CloseConnection(CloseReason.NORMAL_CLOSURE), end=True)

    # -- in -------------------------------------------------------------------------------------
    def _on_read(self, data: bytes) -> bool:
        with self._lock:
            if self._ws.state is ConnectionState.CLOSED:
                return True  # the end is queued already
            self._ws.receive_data(data)
            for event in self._ws.events():
                if isinstance(event, CloseConnection):
                    self._on_close(event)
                    return True
                if isinstance(event, Ping):
                    self._emit(event.response())
                elif isinstance(event, BytesMessage):
                    self._message += event.data
                    if len(self._message) > self.max_message:
                        log.info("exec client sent a message larger than %d bytes", self.max_message)
                        self._emit(CloseConnection(CloseReason.MESSAGE_TOO_BIG, "message too big"), end=True)
                        return True
                    if event.message_finished:
                        message, self._message = bytes(self._message), bytearray()
                        if message:
                            self._channel(message[0], message[1:])
                # Text messages carry no channel data: ignored, as pongs are.
        return True

    def _on_close(self, event: CloseConnection) -> None:
        state = self._ws.state
        if state is ConnectionState.REMOTE_CLOSING:  # the client closes first: answer, end
            self._emit(event.response(), end=True)
        elif state is ConnectionState.OPEN:  # wsproto reports a frame it cannot parse as a close
            log.info("exec client broke the WebSocket protocol: %s", event.reason)
            self._emit(CloseConnection(event.code, event.reason), end=True)
        # Otherwise the client answered our close, after which the end is queued already.

    def _channel(self, channel: int, data: bytes) -> None:
        if channel == STDIN:
            if self.stdin is not None and self.open_stdin and data:
                self.stdin.put(data)
        elif channel == CLOSE and self.v5:
            if data[:1] == bytes([STDIN]) and self.stdin is not None:
                self.stdin.close()
        elif channel == RESIZE:
            size = terminal_size(data)
            if size is None:
                log.info("exec client sent an unreadable terminal size: %r", data[:100])
            elif self.stdin is not None:
                self.stdin.put(size)


def terminal_size(data: bytes) -> tuple[int, int] | None:
    """A resize message's ``{"Width": W, "Height": H}`` as (W, H); None when it is not one."""
    try:
        size = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    width, height = (size.get("Width"), size.get("Height")) if isinstance(size, dict) else (None, None)
    if isinstance(width, int) and isinstance(height, int) and 0 <= width < 65536 and 0 <= height < 65536:
        return width, height
    return None
