"""``kubectl exec`` in the process runtime: a command run next to a container's process, streamed back.

The command gets the container's environment and working directory, runs in its own process group
(killed with it when the stream goes away), optionally on a pseudo-terminal (``tty``, with
``resize``; no job control). Its stdout and stderr are read by threads into one queue, so the
Exec stream sees them interleaved in arrival order; the exit code, 128+N when killed by signal N,
is the stream's last message. It implements :class:`agent.runtime.ExecSession`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping

from agent.process_group import exit_code_of, killpg, reap


class ProcessExec:
    """``kubectl exec`` into a process-runtime container: a sibling process with the container's env."""

    def __init__(
        self,
        argv: list[str],
        env: Mapping[str, str],
        cwd: str | None,
        tty: bool,
        stdin: bool,
        on_done: Callable[[ProcessExec], None],
    ) -> None:
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self._tty = tty
        self._master: int | None = None
        self._exited = threading.Event()
        self._rc = 0
        self._on_done = on_done
        if tty:
            import pty

            master, slave = pty.openpty()
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    env=dict(env),
                    cwd=cwd,
                    start_new_session=True,
                    close_fds=True,
                )
            finally:
                os.close(slave)
            self._master = master
            self._streams = 1
            self._reader(os.dup(master), "stdout")
        else:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
            assert self._proc.stdout is not None and self._proc.stderr is not None
            self._streams = 2
            self._reader(os.dup(self._proc.stdout.fileno()), "stdout")
            self._reader(os.dup(self._proc.stderr.fileno()), "stderr")
            self._proc.stdout.close()
            self._proc.stderr.close()
        threading.Thread(target=self._wait, daemon=True).start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _reader(self, fd: int, stream: str) -> None:
        def run() -> None:
            try:
                while True:
                    try:
                        data = os.read(fd, 65536)
                    except OSError:
                        break
                    if not data:
                        break
                    self._queue.put((stream, data))
            finally:
                os.close(fd)
                self._queue.put(None)

        threading.Thread(target=run, daemon=True).start()

    def _wait(self) -> None:
        self._rc = reap(self._proc)
        self._exited.set()
        self._on_done(self)

    def write_stdin(self, data: bytes) -> None:
        try:
            if self._master is not None:
                os.write(self._master, data)
            elif self._proc.stdin is not None:
                self._proc.stdin.write(data)
                self._proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def close_stdin(self) -> None:
        if self._master is not None:
            self.write_stdin(b"\x04")
            return
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def resize(self, width: int, height: int) -> None:
        if self._master is None:
            return
        import fcntl
        import struct
        import termios

        with contextlib.suppress(OSError):
            fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def output(self) -> Iterator[tuple[str, bytes]]:
        ended = 0
        exited_at: float | None = None
        while ended < self._streams:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                # Something that escaped the process group may hold the pipe open: give up 2 s
                # after the command itself exited.
                if self._exited.is_set():
                    exited_at = exited_at or time.monotonic()
                    if time.monotonic() - exited_at > 2.0:
                        return
                continue
            if item is None:
                ended += 1
            else:
                yield item

    def wait(self) -> int:
        self._exited.wait()
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.close(self._master)
            self._master = None
        return exit_code_of(self._rc)[0]

    def kill(self) -> None:
        if not self._exited.is_set():
            killpg(self._proc.pid, signal.SIGKILL)

    def signal(self, sig: int) -> None:
        if not self._exited.is_set():
            killpg(self._proc.pid, sig)
