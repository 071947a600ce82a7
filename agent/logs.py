"""Container logs: size-bounded files per container instance, and reading them like ``kubectl logs``.

Each line a container writes is stored with its arrival time and stream in the CRI log format the
kubelet uses (``<RFC3339Nano> <stdout|stderr> <F|P> <content>``), so GetLogs can filter by
``since_seconds``, add ``timestamps`` and count ``tail_lines`` exactly. A log keeps at most two files
of ``max_bytes`` (the live one and one rotated), so a chatty container cannot fill the disk.
Readers address data by an absolute offset, which survives rotation; followers block on a
condition variable until more is written or the log is finished.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.model import rfc3339_nano

MAX_LINE = 16 * 1024
CHUNK = 32 * 1024


@dataclass(frozen=True)
class LogQuery:
    follow: bool = False
    tail_lines: int | None = None
    since_seconds: int | None = None
    timestamps: bool = False
    limit_bytes: int | None = None


class ContainerLog:
    """The log of one container instance (one start of one container)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.rotated = path.with_name(path.name + ".1")
        self.max_bytes = max(max_bytes, 2 * MAX_LINE)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")  # noqa: SIM115 - lives as long as the container instance
        self._size = 0
        self._base = 0  # absolute offset of the first byte of the live file
        self._rot_base = 0  # absolute offset of the first byte of the rotated file
        self._has_rotated = False
        self._total = 0
        self._cond = threading.Condition()
        self.finished = False

    # -- writing ---------------------------------------------------------------------------
    def write(self, stream: str, content: bytes, partial: bool = False) -> None:
        record = (
            b"%s %s %s " % (rfc3339_nano(time.time_ns()).encode(), stream.encode(), b"P" if partial else b"F")
            + content
            + b"\n"
        )
        with self._cond:
            if self.finished:
                return
            if self._size and self._size + len(record) > self.max_bytes:
                self._rotate()
            self._file.write(record)
            self._file.flush()
            self._size += len(record)
            self._total += len(record)
            self._cond.notify_all()

    def _rotate(self) -> None:
        self._file.close()
        os.replace(self.path, self.rotated)
        self._rot_base, self._base, self._has_rotated = self._base, self._total, True
        self._file = open(self.path, "ab")  # noqa: SIM115
        self._size = 0

    def finish(self) -> None:
        with self._cond:
            if not self.finished:
                self.finished = True
                self._file.close()
            self._cond.notify_all()

    def remove(self) -> None:
        self.finish()
        for p in (self.path, self.rotated):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    # -- reading ---------------------------------------------------------------------------
    def read_from(self, offset: int) -> tuple[bytes, int]:
        """Bytes stored from absolute ``offset`` on (skipping what rotation dropped), and the new end."""
        with self._cond:
            start = self._rot_base if self._has_rotated else self._base
            offset = max(offset, start)
            parts: list[bytes] = []
            if self._has_rotated and offset < self._base:
                with open(self.rotated, "rb") as f:
                    f.seek(offset - self._rot_base)
                    parts.append(f.read(self._base - offset))
                offset = self._base
            if offset < self._total:
                with open(self.path, "rb") as f:
                    f.seek(offset - self._base)
                    parts.append(f.read(self._total - offset))
            return b"".join(parts), self._total

    def wait(self, offset: int, timeout: float) -> None:
        with self._cond:
            if self._total <= offset and not self.finished:
                self._cond.wait(timeout)

    def pump(self, fd: int, stream: str) -> None:
        """Copy a pipe into the log line by line until EOF (runs in its own thread)."""
        buf = b""
        try:
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                buf += chunk
                while (i := buf.find(b"\n")) >= 0:
                    self.write(stream, buf[:i])
                    buf = buf[i + 1 :]
                while len(buf) >= MAX_LINE:
                    self.write(stream, buf[:MAX_LINE], partial=True)
                    buf = buf[MAX_LINE:]
            if buf:
                self.write(stream, buf, partial=True)
        finally:
            os.close(fd)


def _format(records: bytes, timestamps: bool, since_ns: int | None) -> list[bytes]:
    out: list[bytes] = []
    for line in records.split(b"\n"):
        parts = line.split(b" ", 3)
        if len(parts) < 3:
            continue
        ts, _stream, tag = parts[0], parts[1], parts[2]
        content = parts[3] if len(parts) == 4 else b""
        if since_ns is not None and _parse_ts(ts) < since_ns:
            continue
        text = content if tag == b"P" else content + b"\n"
        out.append(ts + b" " + text if timestamps else text)
    return out


def _parse_ts(ts: bytes) -> int:
    try:
        text = ts.decode()
        secs = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
        frac = text[20:-1] if len(text) > 20 else "0"
        return int(secs) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])
    except ValueError:
        return 0


def read_log(log: ContainerLog, query: LogQuery, active: Callable[[], bool]) -> Iterator[bytes]:
    """``kubectl logs`` semantics over one container instance's log; yields chunks of output."""
    since_ns = None
    if query.since_seconds is not None:
        since_ns = time.time_ns() - query.since_seconds * 1_000_000_000
    budget = query.limit_bytes
    data, offset = log.read_from(0)
    lines = _format(data, query.timestamps, since_ns)
    if query.tail_lines is not None:
        lines = lines[-query.tail_lines :] if query.tail_lines > 0 else []
    pending = b"".join(lines)
    while True:
        if pending:
            if budget is not None:
                pending = pending[:budget]
                budget -= len(pending)
            for i in range(0, len(pending), CHUNK):
                yield pending[i : i + CHUNK]
            if budget is not None and budget <= 0:
                return
        if not query.follow:
            return
        pending = b""
        while not pending:
            if not active():
                return
            finished = log.finished
            data, offset = log.read_from(offset)
            if data:
                pending = b"".join(_format(data, query.timestamps, since_ns))
                if not pending:
                    continue
            elif finished:
                return
            else:
                log.wait(offset, 0.5)
