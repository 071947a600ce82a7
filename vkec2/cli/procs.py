"""Local processes on loopback: free ports, readiness waits, and supervised children (redis, moto, ...).

The local fleet (``vkec2 up``) and the test suite start their services through this module. Every
child runs in its own process group with its output in a log file, and is stopped by its PID only,
never by name, so nothing touches processes it did not start. Readiness is awaited by polling a
port or an HTTP endpoint with a deadline, never by sleeping a fixed time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class ManagedProcess:
    """A child process in its own process group, with its output captured to a log file."""

    name: str
    argv: Sequence[str]
    env: dict[str, str] | None = None
    cwd: str | None = None
    log_path: Path = field(init=False)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    log_dir: str | None = None

    def start(self) -> ManagedProcess:
        fd, path = tempfile.mkstemp(prefix=f"vkec2-{self.name}-", suffix=".log", dir=self.log_dir)
        self.log_path = Path(path)
        self.proc = subprocess.Popen(
            list(self.argv),
            stdout=fd,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        os.close(fd)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group of this child (it and anything it forked)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(5)
        # Reap anything left in the group (e.g. prefork children).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def start_redis(
    port: int | None = None, log_dir: str | None = None, args: Sequence[str] = ()
) -> tuple[ManagedProcess, str]:
    """A private ``redis-server`` on a free port, with 64 databases, no persistence and ``args``."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = port or free_port()
    proc = ManagedProcess(
        "redis",
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--databases",
            "64",
            *args,
        ],
        log_dir=log_dir,
    ).start()
    wait_until(lambda: port_open(port), 15, f"redis-server on port {port}")
    return proc, f"redis://127.0.0.1:{port}"


def start_moto(port: int | None = None, log_dir: str | None = None) -> tuple[ManagedProcess, str]:
    """moto's server (EC2, S3, IAM ...) over HTTP on a free loopback port."""
    port = port or free_port()
    proc = ManagedProcess(
        "moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log_dir=log_dir
    ).start()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=0.5):
                return True
        except OSError:
            return False

    wait_until(ready, 30, f"moto server on port {port}")
    return proc, url


def start_agent_sim(
    ec2_endpoint: str,
    *,
    extra_args: Sequence[str] = (),
    region: str = "us-west-2",
    boot_delay: float = 0.0,
    timeout: float = 60.0,
    log_dir: str | None = None,
    env: dict[str, str] | None = None,
) -> tuple[ManagedProcess, str]:
    """``vkec2 agent-sim`` on a free loopback port for the instances at ``ec2_endpoint``.

    Returns the process and the simulator's HOST:PORT once it listens.
    """
    port = free_port()
    proc = ManagedProcess(
        "agent-sim",
        [
            sys.executable,
            "-m",
            "vkec2.cli",
            "agent-sim",
            "--listen",
            f"127.0.0.1:{port}",
            "--ec2-endpoint",
            ec2_endpoint,
            "--region",
            region,
            "--boot-delay",
            str(boot_delay),
            *extra_args,
        ],
        env=env,
        log_dir=log_dir,
    ).start()

    def ready() -> bool:
        if not proc.alive():
            raise RuntimeError(f"the agent simulator exited:\n{proc.output()[-3000:]}")
        return port_open(port)

    try:
        wait_until(ready, timeout, f"the agent simulator on port {port}", interval=0.1)
    except BaseException:
        proc.stop()
        raise
    return proc, f"127.0.0.1:{port}"
