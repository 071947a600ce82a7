"""Process groups as containers: signalling a group, reaping its leader, exit codes as runtimes report them.

The process runtime starts every container (and every exec) as the leader of its own session and
process group. These helpers are what makes such a group behave like a container: when the leader
exits, whatever is left of its group is killed (like PID 1 of a container), and a process killed by
signal N reports exit code 128+N, the way container runtimes do.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def exit_code_of(returncode: int) -> tuple[int, int]:
    """(exit code, signal) the way container runtimes report them: 128+N when killed by signal N."""
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, 0


def reap(proc: subprocess.Popen[bytes]) -> int:
    """Wait for the group leader, then kill whatever is left of its process group."""
    rc = proc.wait()
    killpg(proc.pid, signal.SIGKILL)
    return rc
