"""``/containerLogs/{namespace}/{pod}/{container}``: a container's log streamed from its agent.

The query (``follow``, ``tailLines``, ``sinceSeconds``/``sinceTime``, ``timestamps``,
``limitBytes``, ``previous``) becomes :class:`LogOptions`. Before answering 200 the agent is
checked and the stream's first answer awaited for up to :data:`FIRST_CHUNK_WAIT`, so refusals get
a proper status; then the body goes out chunked as the agent sends it, through the connection's
:class:`~producer.kubelet.duplex.Duplex`, which notices a client that goes away even while the log
is quiet. The agent call is cancelled by closing the stream's own client.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from producer.kubelet.duplex import Duplex
from producer.kubelet.pods import PodStreams
from producer.kubelet.wire import LAST_CHUNK, Query, bad_request, chunk, query_bool, query_int
from vkec2.domain.times import parse_rfc3339
from vkec2.errors import AgentError

log = logging.getLogger("producer.kubelet")

FIRST_CHUNK_WAIT = 2.0  # how long a log request waits for the agent's first answer before sending 200


@dataclass(frozen=True)
class LogOptions:
    """The log query as the agent takes it."""

    follow: bool = False
    tail_lines: int | None = None
    since_seconds: int | None = None
    timestamps: bool = False
    previous: bool = False
    limit_bytes: int | None = None

    @classmethod
    def parse(cls, query: Query, now: float | None = None) -> LogOptions:
        """The options of a query; ``sinceTime`` becomes whole seconds before ``now``. Bad values: 400."""
        since = query_int(query, "sinceSeconds", 1)
        since_time = (query.get("sinceTime") or [""])[0]
        if since_time:
            if since is not None:
                raise bad_request("at most one of sinceSeconds or sinceTime may be specified")
            when = parse_rfc3339(since_time)
            if when is None:
                raise bad_request(f"sinceTime: {since_time!r} is not an RFC 3339 time")
            age = (time.time() if now is None else now) - when
            since = max(1, math.ceil(age))
        return cls(
            follow=query_bool(query, "follow"),
            tail_lines=query_int(query, "tailLines", 0),
            since_seconds=since,
            timestamps=query_bool(query, "timestamps"),
            previous=query_bool(query, "previous"),
            limit_bytes=query_int(query, "limitBytes", 1),
        )


def serve_logs(
    handler: BaseHTTPRequestHandler, api: PodStreams, namespace: str, name: str, container: str, query: Query
) -> None:
    """Answer one log request on ``handler``'s connection (errors before the 200 are raised)."""
    opts = LogOptions.parse(query)
    record = api.find(namespace, name)
    target = api.target(record, container)
    client = api.agent_client()
    try:
        client.status(target)  # an unreachable agent is a 503 before anything is committed
        chunks = client.logs(
            target,
            container,
            follow=opts.follow,
            tail_lines=opts.tail_lines,
            since_seconds=opts.since_seconds,
            timestamps=opts.timestamps,
            previous=opts.previous,
            limit_bytes=opts.limit_bytes,
        )
        pump = LogPump(chunks, opts.limit_bytes)
        pump.start()
        pump.answered.wait(FIRST_CHUNK_WAIT)  # rejections arrive at once; quiet logs do not
        failed = pump.failed_before_data()
        if failed is not None:
            raise failed
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()
        handler.close_connection = True
        duplex = Duplex(handler.connection)
        api.track(duplex, True)
        try:
            pump.attach(duplex)
            finished = duplex.run(lambda data: True)
            if not finished:
                log.debug("log client of %s/%s went away", namespace, name)
        finally:
            api.track(duplex, False)
    finally:
        client.close()  # cancels the agent stream if it is still open


class LogPump(threading.Thread):
    """Reads the agent's log stream; buffers until the response is committed, then feeds the duplex."""

    def __init__(self, chunks: Iterator[bytes], limit: int | None) -> None:
        super().__init__(name="kubelet-logs", daemon=True)
        self._chunks = chunks
        self._left = limit
        self._lock = threading.Lock()
        self._buffer: list[bytes] = []
        self._duplex: Duplex | None = None
        self.answered = threading.Event()  # first chunk, end, or error
        self.done = False
        self.error: AgentError | None = None

    def run(self) -> None:
        try:
            for data in self._chunks:
                if self._left is not None:
                    data = data[: self._left]
                    self._left -= len(data)
                if data:
                    self._emit(chunk(data))
                if self._left == 0:
                    break
        except AgentError as exc:
            self._finish(exc)
        except Exception as exc:  # never leave the client hanging
            log.exception("log stream failed")
            self._finish(AgentError(str(exc)))
        else:
            self._finish(None)
        finally:
            with contextlib.suppress(Exception):
                self._chunks.close()  # type: ignore[attr-defined]

    def _emit(self, data: bytes) -> None:
        with self._lock:
            if self._duplex is not None:
                self._duplex.send(data)
            else:
                self._buffer.append(data)
        self.answered.set()

    def _finish(self, error: AgentError | None) -> None:
        with self._lock:
            self.done, self.error = True, error
            if self._duplex is not None:
                self._end(self._duplex)
        self.answered.set()

    def _end(self, duplex: Duplex) -> None:
        if self.error is None:
            duplex.send(LAST_CHUNK)
        else:  # an incomplete chunked body tells the client the stream broke
            log.info("log stream ended with an error: %s", self.error)
        duplex.send(None)

    def failed_before_data(self) -> AgentError | None:
        """The stream's error if it failed before sending anything (then the answer is an error)."""
        with self._lock:
            return self.error if self.done and not self._buffer else None

    def attach(self, duplex: Duplex) -> None:
        """The response is committed: send what is buffered, then everything as it comes."""
        with self._lock:
            for data in self._buffer:
                duplex.send(data)
            self._buffer = []
            self._duplex = duplex
            if self.done:
                self._end(duplex)
