"""Terminal resizes over the kubelet API's WebSocket exec reach the command, as over SPDY.

An :class:`~producer.kubelet.exec.ExecSession` on one end of a socket pair, a :mod:`wsproto`
client on the other: resize messages (channel 4, ``{"Width": .., "Height": ..}``) reach the
command's input as (width, height) — also with a terminal and no stdin, whose stdin stays closed —
and an unreadable one is dropped without ending the session.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterable, Iterator

from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection

from producer.kubelet.duplex import Duplex
from producer.kubelet.exec import RESIZE, STATUS, STDIN, STDOUT, ExecSession, terminal_size
from tests.support.services import wait_until


class Terminal:
    """Records the terminal sizes it is given; echoes stdin; exits 0 when its input ends."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def __call__(self, stdin: Iterable[bytes | tuple[int, int]] | None) -> Iterator[tuple[str, bytes | int]]:
        for item in stdin or []:
            if isinstance(item, tuple):
                self.sizes.append(item)
            else:
                yield "stdout", item
        yield "exit", 0


class Client:
    """The WebSocket frames of a client after the handshake (serve_exec answers that before)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.ws = sock, Connection(ConnectionType.CLIENT)
        self.messages: list[bytes] = []

    def send(self, channel: int, data: bytes) -> None:
        self.sock.sendall(self.ws.send(BytesMessage(bytes([channel]) + data)))

    def read_until_status(self) -> dict[str, object]:
        while True:
            data = self.sock.recv(65536)
            assert data, "the session closed before its status"
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, BytesMessage):
                    self.messages.append(bytes(event.data))
                    if event.data[0] == STATUS:
                        return dict(json.loads(bytes(event.data[1:])))
                assert not isinstance(event, CloseConnection), "closed before the status"


def run_session(server: socket.socket, command: Terminal, *, stdin: bool) -> threading.Thread:
    session = ExecSession(
        Duplex(server), command, ["sh"], stdin=stdin, tty=True, stdout=True, stderr=False, v5=True
    )
    thread = threading.Thread(target=session.run, daemon=True)
    thread.start()
    return thread


def test_resizes_reach_the_command_and_stdin_still_flows() -> None:
    server, sock = socket.socketpair()
    command = Terminal()
    thread = run_session(server, command, stdin=True)
    client = Client(sock)
    client.send(RESIZE, b'{"Width":120,"Height":40}')
    client.send(RESIZE, b"not json")  # dropped, the session goes on
    client.send(STDIN, b"hello")
    client.send(RESIZE, b'{"Width":80,"Height":24}')
    wait_until(lambda: len(command.sizes) == 2, 5, "the terminal sizes to reach the command")
    client.send(255, bytes([STDIN]))  # v5: close stdin, the command's input ends
    assert client.read_until_status()["status"] == "Success"
    assert command.sizes == [(120, 40), (80, 24)]
    assert bytes([STDOUT]) + b"hello" in client.messages
    sock.close()
    thread.join(5)


def test_a_terminal_without_stdin_still_gets_its_sizes_and_no_input() -> None:
    server, sock = socket.socketpair()
    command = Terminal()
    thread = run_session(server, command, stdin=False)
    client = Client(sock)
    client.send(STDIN, b"ignored: stdin was not asked for")
    client.send(RESIZE, b'{"Width":100,"Height":30}')
    wait_until(lambda: command.sizes == [(100, 30)], 5, "the terminal size to reach the command")
    sock.close()  # the client goes: the session ends and the command's input with it
    thread.join(5)
    assert not thread.is_alive()


def test_terminal_sizes_are_read_strictly() -> None:
    assert terminal_size(b'{"Width": 80, "Height": 24}') == (80, 24)
    for bad in (b"", b"[]", b'{"Width": -1, "Height": 2}', b'{"Width": "80", "Height": 24}', b"\xff"):
        assert terminal_size(bad) is None
