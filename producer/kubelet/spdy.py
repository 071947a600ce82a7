"""SPDY/3.1 framing for the kubelet API's streaming endpoints: frames, header blocks, an incremental parser.

The API server reaches kubelets for ``exec``, ``attach`` and ``portForward`` over SPDY/3.1 (the Go
``moby/spdystream`` package on its side). No maintained Python library speaks SPDY — the protocol
was superseded by HTTP/2 and every Python implementation was abandoned years ago — so the small
subset Kubernetes uses is written here: the 8-byte frame headers of control and data frames, the
control frames SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS and
WINDOW_UPDATE, and name/value header blocks compressed with :mod:`zlib` primed with the SPDY/3
dictionary (one compression context per direction for the whole connection). :class:`Parser`
takes bytes as they arrive and returns whole frames; anything malformed raises
:class:`SpdyError` carrying what to answer (a GOAWAY for the connection, or a RST_STREAM for one
stream), so a broken peer is refused, never waited on. Frames are capped at :data:`MAX_FRAME`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
CONTROL_TYPES = {SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE}
REFUSED = -1
"""Pseudo frame type of :class:`Parser`: a frame broke one stream (``status`` to reset it with)."""
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02

# RST_STREAM status codes
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, UNSUPPORTED_VERSION, CANCEL, INTERNAL_ERROR = 1, 2, 3, 4, 5, 6
FLOW_CONTROL_ERROR, STREAM_IN_USE, STREAM_ALREADY_CLOSED, FRAME_TOO_LARGE = 7, 8, 9, 11
# GOAWAY status codes
GOAWAY_OK, GOAWAY_PROTOCOL_ERROR, GOAWAY_INTERNAL_ERROR = 0, 1, 2

MAX_FRAME = 1 << 20
"""Largest frame payload accepted (the wire allows 16 MiB; kubectl writes at most 32 KiB of data)."""
MAX_HEADERS = 64 * 1024
"""Largest decompressed header block accepted."""
DEFAULT_WINDOW = 64 * 1024

# The dictionary's words, in order ("|" is a space inside a word), then its tail, as SPDY/3 defines them.
_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base content-encoding "
    "content-language content-length content-location content-md5 content-range content-type date "
    "etag expect expires from host if-match if-modified-since if-none-match if-range "
    "if-unmodified-since last-modified location max-forwards pragma proxy-authenticate "
    "proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
    "user-agent vary via warning www-authenticate method get status 200|OK version HTTP/1.1 url "
    "public set-cookie keep-alive origin"
)
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)


def _dictionary() -> bytes:
    """The SPDY/3 zlib dictionary: length-prefixed common header words, then a run of common values."""
    words = _WORDS.split(" ")
    out = bytearray()
    for word in words:
        w = word.replace("|", " ").encode()
        out += struct.pack(">I", len(w)) + w
    return bytes(out) + _TAIL.encode()


DICTIONARY = _dictionary()


class SpdyError(Exception):
    """A protocol violation: ``stream`` > 0 resets that stream (``status``), 0 ends the connection."""

    def __init__(self, message: str, *, stream: int = 0, status: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.stream = stream
        self.status = status


@dataclass
class Frame:
    """One frame. ``kind`` is 0 for data, else the control type; ``headers`` lower-case names."""

    kind: int
    flags: int = 0
    stream: int = 0
    data: bytes = b""
    headers: dict[str, list[str]] = field(default_factory=dict)
    associated: int = 0
    status: int = 0
    ping_id: int = 0
    delta: int = 0
    settings: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else ""


class HeaderCodec:
    """Both directions' header compression contexts of one connection."""

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zlib.DEFLATED, 15, 8, zdict=DICTIONARY)

    def encode(self, headers: Mapping[str, str | list[str]]) -> bytes:
        """A compressed header block (names lower-cased; several values NUL-joined)."""
        raw = bytearray(struct.pack(">I", len(headers)))
        for name, value in headers.items():
            n = name.lower().encode()
            v = ("\0".join(value) if isinstance(value, list) else value).encode()
            raw += struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v
        return self._deflate.compress(bytes(raw)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def decode(self, block: bytes, stream: int) -> dict[str, list[str]]:
        """The header block of ``stream``; a corrupt block breaks the shared context: GOAWAY."""
        try:
            raw = self._inflate.decompress(block, MAX_HEADERS + 1)
        except zlib.error as exc:
            raise SpdyError(f"corrupt header block: {exc}") from None
        if len(raw) > MAX_HEADERS or self._inflate.unconsumed_tail:
            raise SpdyError(f"header block larger than {MAX_HEADERS} bytes")
        try:
            return _parse_block(raw, stream)
        except (struct.error, UnicodeDecodeError) as exc:
            raise SpdyError(f"malformed header block: {exc}", stream=stream) from None


def _parse_block(raw: bytes, stream: int) -> dict[str, list[str]]:
    (count,) = struct.unpack_from(">I", raw, 0)
    pos, out = 4, {}
    if count > 1024:
        raise SpdyError(f"too many headers ({count})", stream=stream)
    for _ in range(count):
        (n,) = struct.unpack_from(">I", raw, pos)
        name = raw[pos + 4 : pos + 4 + n].decode()
        pos += 4 + n
        (m,) = struct.unpack_from(">I", raw, pos)
        value = raw[pos + 4 : pos + 4 + m].decode()
        pos += 4 + m
        if pos > len(raw) or not name:
            raise SpdyError("header block truncated or empty header name", stream=stream)
        if name != name.lower() or name in out:
            raise SpdyError(f"header name {name!r} not lower-case or repeated", stream=stream)
        out[name] = value.split("\0")
    if pos != len(raw):
        raise SpdyError("trailing bytes after the header block", stream=stream)
    return out


def _control(kind: int, flags: int, payload: bytes) -> bytes:
    if len(payload) >= 1 << 24:
        raise ValueError("frame too large")
    return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload


def data_frame(stream: int, data: bytes, *, fin: bool = False) -> bytes:
    if len(data) >= 1 << 24:
        raise ValueError("frame too large")
    return struct.pack(">II", stream & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | len(data)) + data


def syn_stream(codec: HeaderCodec, stream: int, headers: Mapping[str, str], *, fin: bool = False) -> bytes:
    body = struct.pack(">IIH", stream, 0, 0) + codec.encode(headers)
    return _control(SYN_STREAM, FLAG_FIN if fin else 0, body)


def syn_reply(codec: HeaderCodec, stream: int, headers: dict[str, str], *, fin: bool = False) -> bytes:
    return _control(SYN_REPLY, FLAG_FIN if fin else 0, struct.pack(">I", stream) + codec.encode(headers))


def headers_frame(codec: HeaderCodec, stream: int, headers: dict[str, str], *, fin: bool = False) -> bytes:
    return _control(HEADERS, FLAG_FIN if fin else 0, struct.pack(">I", stream) + codec.encode(headers))


def rst_stream(stream: int, status: int) -> bytes:
    return _control(RST_STREAM, 0, struct.pack(">II", stream, status))


def settings(entries: list[tuple[int, int, int]]) -> bytes:
    """``entries``: (flags, id, value)."""
    body = struct.pack(">I", len(entries)) + b"".join(
        struct.pack(">I", (f << 24) | i) + struct.pack(">I", v) for f, i, v in entries
    )
    return _control(SETTINGS, 0, body)


def ping(ping_id: int) -> bytes:
    return _control(PING, 0, struct.pack(">I", ping_id))


def goaway(last_stream: int, status: int = GOAWAY_OK) -> bytes:
    return _control(GOAWAY, 0, struct.pack(">II", last_stream, status))


def window_update(stream: int, delta: int) -> bytes:
    return _control(WINDOW_UPDATE, 0, struct.pack(">II", stream, delta))


_FIXED = {RST_STREAM: 8, PING: 4, GOAWAY: 8, WINDOW_UPDATE: 8}
_MIN = {SYN_STREAM: 10, SYN_REPLY: 4, HEADERS: 4, SETTINGS: 4}


class Parser:
    """Bytes in (:meth:`feed`), whole frames out.

    A frame that breaks the connection raises :class:`SpdyError`; one that breaks only its stream
    comes out as a :data:`REFUSED` frame (the stream to reset, the status, the reason as ``data``).
    """

    def __init__(self, codec: HeaderCodec, max_frame: int = MAX_FRAME) -> None:
        self.codec = codec
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= 8:
            first, second = struct.unpack_from(">II", self._buf, 0)
            flags, length = second >> 24, second & 0xFFFFFF
            control = bool(first & 0x80000000)
            if length > self.max_frame:
                raise SpdyError(f"frame of {length} bytes exceeds {self.max_frame}")
            if len(self._buf) < 8 + length:
                break
            payload = bytes(self._buf[8 : 8 + length])
            del self._buf[: 8 + length]
            if not control:
                stream = first & 0x7FFFFFFF
                if stream == 0:
                    raise SpdyError("data frame on stream 0")
                frames.append(Frame(0, flags, stream, payload))
                continue
            version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
            if version != VERSION:
                raise SpdyError(f"unsupported SPDY version {version}", status=PROTOCOL_ERROR)
            try:
                frame = self._control(kind, flags, payload)
            except SpdyError as exc:
                if not exc.stream:
                    raise
                frame = Frame(REFUSED, flags, exc.stream, str(exc).encode(), status=exc.status)
            if frame is not None:
                frames.append(frame)
        return frames

    def _control(self, kind: int, flags: int, payload: bytes) -> Frame | None:
        if kind not in CONTROL_TYPES:
            return None  # unknown control frames are ignored, as SPDY/3 asks
        if kind in _FIXED and len(payload) != _FIXED[kind]:
            raise SpdyError(f"control frame {kind} of length {len(payload)}, expected {_FIXED[kind]}")
        if len(payload) < _MIN.get(kind, 0):
            raise SpdyError(f"control frame {kind} too short ({len(payload)} bytes)")
        if kind == SYN_STREAM:
            stream, assoc = struct.unpack_from(">II", payload, 0)
            stream &= 0x7FFFFFFF
            if stream == 0:
                raise SpdyError("SYN_STREAM for stream 0")
            headers = self.codec.decode(payload[10:], stream)
            return Frame(kind, flags, stream, headers=headers, associated=assoc & 0x7FFFFFFF)
        if kind in (SYN_REPLY, HEADERS):
            stream = struct.unpack_from(">I", payload, 0)[0] & 0x7FFFFFFF
            return Frame(kind, flags, stream, headers=self.codec.decode(payload[4:], stream))
        if kind == RST_STREAM:
            stream, status = struct.unpack(">II", payload)
            return Frame(kind, flags, stream & 0x7FFFFFFF, status=status)
        if kind == PING:
            return Frame(kind, flags, ping_id=struct.unpack(">I", payload)[0])
        if kind == GOAWAY:
            last, status = struct.unpack(">II", payload)
            return Frame(kind, flags, last & 0x7FFFFFFF, status=status)
        if kind == WINDOW_UPDATE:
            stream, delta = struct.unpack(">II", payload)
            delta &= 0x7FFFFFFF
            if delta == 0:
                raise SpdyError("WINDOW_UPDATE with a zero delta", stream=stream & 0x7FFFFFFF)
            return Frame(kind, flags, stream & 0x7FFFFFFF, delta=delta)
        # SETTINGS
        (count,) = struct.unpack_from(">I", payload, 0)
        if len(payload) != 4 + 8 * count:
            raise SpdyError(f"SETTINGS with {count} entries in {len(payload)} bytes")
        entries = []
        for i in range(count):
            head, value = struct.unpack_from(">II", payload, 4 + 8 * i)
            entries.append((head >> 24, head & 0xFFFFFF, value))
        return Frame(kind, flags, settings=entries)
