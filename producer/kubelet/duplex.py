"""Full-duplex I/O on one accepted TLS connection, owned by the connection's own thread.

A log stream or an exec session writes what another thread produces (the agent's output) while it
must also read the peer (WebSocket frames; for logs, just noticing a client that went away). An
:class:`ssl.SSLSocket` must not be read and written from two threads at once (OpenSSL's ``SSL``
objects are not thread-safe), :mod:`asyncio` cannot adopt a socket whose handshake
:mod:`http.server` already did, and :mod:`wsproto` leaves I/O to its caller. So this small piece
stays hand-written: other threads queue bytes (:class:`queue.SimpleQueue`) and wake the owner
through a pipe; the owner waits on the socket and the pipe with :mod:`selectors`, writes the queue
in order and hands what the peer sends to a callback.
"""

from __future__ import annotations

import contextlib
import os
import queue
import selectors
import socket
import ssl
import threading
from collections.abc import Callable

WRITE_TIMEOUT = 60.0


class Duplex:
    """Single-threaded full-duplex I/O on one (TLS) socket.

    Other threads queue bytes with :meth:`send` (``None`` ends the exchange); :meth:`run`, in the
    connection's own thread, writes them in order and hands whatever the peer sends to a callback,
    so the TLS object is only ever used by one thread and a client that disconnects is noticed at
    once even while nothing is being written.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._lock = threading.Lock()
        self._closed = False

    def send(self, data: bytes | None) -> None:
        """Queue bytes to write (``None``: end); from any thread, also after the exchange ended."""
        with self._lock:  # never write to the pipe's descriptor number once it is closed and reused
            if self._closed:
                return
            self._out.put(data)
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"\0")

    def run(self, on_read: Callable[[bytes], bool]) -> bool:
        """Until ``send(None)`` (returns True) or until the peer closes or ``on_read`` says stop (False)."""
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ, "peer")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        # Bytes TLS already decrypted are not signalled by the descriptor: read them without waiting.
        pending: Callable[[], int] = getattr(self.sock, "pending", lambda: 0)
        try:
            while True:
                ready = {key.data for key, _ in sel.select(0 if pending() else None)}
                if "wake" in ready:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self._wake_r, 4096):
                            pass
                if self._flush():
                    return True
                if "peer" in ready or pending():
                    self.sock.settimeout(0)
                    try:
                        data = self.sock.recv(65536)
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                        continue
                    if not data or not on_read(data):
                        return False
        except OSError:
            return False
        finally:
            sel.close()
            with self._lock:
                self._closed = True
                os.close(self._wake_r)
                os.close(self._wake_w)
            with contextlib.suppress(OSError):
                self.sock.settimeout(WRITE_TIMEOUT)

    def _flush(self) -> bool:
        """Write what is queued; True once the end (``None``) is reached."""
        while True:
            try:
                item = self._out.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            self.sock.settimeout(WRITE_TIMEOUT)
            self.sock.sendall(item)
