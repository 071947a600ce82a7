"""``kubectl port-forward`` on the instance: one TCP connection to ``127.0.0.1:<port>``, piped both ways.

The PortForward stream's requests (``data``, ``close_write``) are written to the socket by a thread
of their own, while the caller iterates what the socket returns; the stream ends when the port's
side has closed its writing half and the caller its own (or when either goes away). Plain
:mod:`socket` and :mod:`threading`: the agent needs nothing but the standard library and gRPC.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

from agent.model import FailedPrecondition, InvalidArgument

HOST = "127.0.0.1"
CONNECT_TIMEOUT = 5.0


def check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise InvalidArgument(f"port must be between 1 and 65535, got {port}")


class Forward:
    """One forwarded connection: :meth:`open` it, :meth:`feed` it the requests, iterate :meth:`output`."""

    def __init__(self, port: int, host: str = HOST) -> None:
        check_port(port)
        self.port = port
        try:
            self.sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            raise FailedPrecondition(
                f"cannot connect to port {port} on the instance ({host}): {exc.strerror or exc}"
            ) from None
        self.sock.settimeout(None)
        self._closed = threading.Event()

    def feed(self, requests: Iterator[Any]) -> None:
        """Write the caller's bytes (in a thread); shut the writing half at ``close_write`` or the end."""
        try:
            for req in requests:
                kind = req.WhichOneof("msg")
                if kind == "data":
                    self.sock.sendall(req.data)
                elif kind == "close_write":
                    break
        except Exception:  # the caller went away, or the port closed: either ends the writes
            pass
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def output(self) -> Iterator[bytes]:
        """What the port sends, until it closes its side."""
        try:
            while True:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                yield data
        finally:
            self.close()

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
