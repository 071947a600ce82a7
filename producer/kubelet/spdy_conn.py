"""The server side of one SPDY/3.1 connection: streams the client opens, their data both ways, refusals.

The client (the API server, or ``kubectl`` through it) opens every stream with a SYN_STREAM; each
is answered with a SYN_REPLY and handed to a callback as a :class:`Stream`, whose incoming data is
an iterator (ending at the client's FIN) and whose :meth:`Stream.write`/:meth:`Stream.close` queue
frames. Frames come in on the connection's own thread (the :class:`~producer.kubelet.duplex.Duplex`
reader); writers are other threads, so header compression and queueing share one lock. PINGs are
answered; WINDOW_UPDATEs are acknowledged by sending our own for data received (the Go peer does
no flow control, so ours is not enforced either). A protocol violation on one stream is a
RST_STREAM; on the connection (bad frame, corrupt header block, unsupported version) a GOAWAY and
the end: a broken client is answered and dropped, never waited on.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator

from producer.kubelet import spdy
from producer.kubelet.duplex import Duplex

log = logging.getLogger("producer.kubelet")

MAX_CHUNK = 32 * 1024
MAX_STREAMS = 1000


class Stream:
    """One client-opened stream: ``headers`` (lower-case names), data in by iteration, out by ``write``."""

    def __init__(self, conn: SpdyConnection, stream_id: int, headers: dict[str, list[str]]) -> None:
        self.conn = conn
        self.id = stream_id
        self.headers = headers
        self._in: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.remote_closed = False
        self.local_closed = False

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else ""

    @property
    def kind(self) -> str:
        """The ``streamType`` header (error, stdin, stdout, stderr, resize, data)."""
        return self.header("streamtype")

    def _receive(self, data: bytes, fin: bool) -> None:
        if self.remote_closed:
            return
        if data:
            self._in.put(data)
        if fin:
            self.remote_closed = True
            self._in.put(None)
            self._done()

    def _done(self) -> None:
        if self.remote_closed and self.local_closed:
            self.conn.forget(self.id)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self._in.get()
            if item is None:
                return
            yield item

    def write(self, data: bytes) -> None:
        if self.local_closed:
            return
        for i in range(0, len(data), MAX_CHUNK):
            self.conn.send(spdy.data_frame(self.id, data[i : i + MAX_CHUNK]))

    def close(self) -> None:
        """Our FIN (once): nothing more is written on this stream."""
        if not self.local_closed:
            self.local_closed = True
            self.conn.send(spdy.data_frame(self.id, b"", fin=True))
            self._done()

    def abort(self) -> None:
        """Unblock readers of this stream (the connection ended)."""
        self._receive(b"", True)


class SpdyConnection:
    """Frames in on the duplex's thread (:meth:`on_read`), frames out from any thread (:meth:`send`)."""

    def __init__(self, duplex: Duplex, on_stream: Callable[[Stream], None]) -> None:
        self.duplex = duplex
        self.on_stream = on_stream
        self.codec = spdy.HeaderCodec()
        self.parser = spdy.Parser(self.codec)
        self.streams: dict[int, Stream] = {}
        self.last_stream = 0
        self._lock = threading.Lock()
        self._ended = False
        self.error: str | None = None

    def run(self) -> bool:
        """Serve until the end (True) or until the client closes or breaks the connection (False)."""
        try:
            return self.duplex.run(self.on_read)
        finally:
            with self._lock:
                streams = list(self.streams.values())
            for stream in streams:
                stream.abort()

    def forget(self, stream_id: int) -> None:
        """A stream closed both ways is no longer open (it no longer counts against ``MAX_STREAMS``)."""
        with self._lock:
            self.streams.pop(stream_id, None)

    def send(self, frame: bytes) -> None:
        with self._lock:
            if not self._ended:
                self.duplex.send(frame)

    def send_headers(self, build: Callable[[spdy.HeaderCodec], bytes]) -> None:
        """Queue a frame with a header block: compressed and queued under one lock (the context is shared)."""
        with self._lock:
            if not self._ended:
                self.duplex.send(build(self.codec))

    def end(self, status: int = spdy.GOAWAY_OK) -> None:
        """GOAWAY and the end of the connection once everything queued before is written."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            self.duplex.send(spdy.goaway(self.last_stream, status))
            self.duplex.send(None)

    def on_read(self, data: bytes) -> bool:
        try:
            frames = self.parser.feed(data)
        except spdy.SpdyError as exc:
            return self._refuse(exc)
        for frame in frames:
            try:
                self._frame(frame)
            except spdy.SpdyError as exc:
                if not self._refuse(exc):
                    return False
        return True

    def _refuse(self, exc: spdy.SpdyError) -> bool:
        if exc.stream:
            log.info("SPDY client broke stream %d: %s", exc.stream, exc)
            self.send(spdy.rst_stream(exc.stream, exc.status))
            with self._lock:
                stream = self.streams.pop(exc.stream, None)
            if stream is not None:
                stream.abort()
            return True
        log.info("SPDY client broke the protocol: %s", exc)
        self.error = str(exc)
        self.end(spdy.GOAWAY_PROTOCOL_ERROR)
        return True  # the end is queued; the duplex finishes writing it

    def _frame(self, frame: spdy.Frame) -> None:
        kind = frame.kind
        if kind == spdy.REFUSED:
            raise spdy.SpdyError(
                frame.data.decode(errors="replace"), stream=frame.stream, status=frame.status
            )
        if kind == 0:
            stream = self.streams.get(frame.stream)
            if stream is None or stream.remote_closed:
                raise spdy.SpdyError(
                    f"data for stream {frame.stream} that is not open",
                    stream=frame.stream,
                    status=spdy.INVALID_STREAM if stream is None else spdy.STREAM_ALREADY_CLOSED,
                )
            stream._receive(frame.data, frame.fin)
            if frame.data and not frame.fin:
                self.send(spdy.window_update(frame.stream, len(frame.data)))
        elif kind == spdy.SYN_STREAM:
            self._syn_stream(frame)
        elif kind == spdy.RST_STREAM:
            with self._lock:
                stream = self.streams.pop(frame.stream, None)
            if stream is not None:
                stream.local_closed = True
                stream.abort()
        elif kind == spdy.PING:
            if frame.ping_id % 2 == 1:  # client-initiated pings are odd: echo them
                self.send(spdy.ping(frame.ping_id))
        elif kind == spdy.GOAWAY:
            self.end()
        elif kind == spdy.HEADERS:
            found = self.streams.get(frame.stream)
            if found is None:
                raise spdy.SpdyError(
                    "HEADERS for an unknown stream", stream=frame.stream, status=spdy.INVALID_STREAM
                )
            if frame.fin:
                found._receive(b"", True)
        elif kind == spdy.SYN_REPLY:
            raise spdy.SpdyError("SYN_REPLY for a stream this server never opened", stream=frame.stream)
        # SETTINGS and WINDOW_UPDATE need no answer.

    def _syn_stream(self, frame: spdy.Frame) -> None:
        sid = frame.stream
        if sid in self.streams:
            raise spdy.SpdyError(f"stream {sid} is already open", stream=sid, status=spdy.STREAM_IN_USE)
        if sid % 2 == 0 or sid <= self.last_stream:
            raise spdy.SpdyError(f"stream id {sid} is not a new client stream id", stream=sid)
        if len(self.streams) >= MAX_STREAMS:
            raise spdy.SpdyError("too many open streams", stream=sid, status=spdy.REFUSED_STREAM)
        self.last_stream = sid
        stream = Stream(self, sid, frame.headers)
        with self._lock:
            self.streams[sid] = stream
        self.send_headers(lambda codec: spdy.syn_reply(codec, sid, {}))
        if frame.fin or frame.flags & spdy.FLAG_UNIDIRECTIONAL:
            stream._receive(b"", True)
        self.on_stream(stream)
