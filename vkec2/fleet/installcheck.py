"""Spot an agent whose install failed, from the instance's console, instead of waiting out the boot.

The user data (agent/userdata) prints ``VKEC2-AGENT-INSTALL-FAILED: <reason>`` on the console when it
cannot install the agent (no Python >= 3.10, a checksum that does not match, an artifact that does
not import, a failed download) and stops. While the create step waits for the agent to answer, it
asks :class:`InstallCheck` which reads GetConsoleOutput at most once per
:data:`CONSOLE_CHECK_SECONDS` per pod and instance in this worker process (the call is a
``describe``-class call under the fleet's EC2 rate limits, vkec2.ec2.ratelimit), not before that
long after the launch (no install fails faster), and returns the reason of the last marker line.
A failed read is ignored: the boot timeout remains the backstop.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

from vkec2.contract import INSTALL_FAILED_MARKER
from vkec2.domain.models import PodRecord, now
from vkec2.errors import Ec2Error
from vkec2.ports import Ec2

#: How often one pod's console is read while its agent does not answer.
CONSOLE_CHECK_SECONDS = 30.0
#: The longest reason kept (a console line can be long; the pod message stays readable).
MAX_REASON = 400
_MARKER_LINE = re.compile(re.escape(INSTALL_FAILED_MARKER) + r":[ \t]*([^\r\n]*)")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]|\x1b\[[0-9;]*[A-Za-z]")
_FORGET_AFTER = 3600.0


def install_failure(console: str) -> str | None:
    """The reason of the last install-failure marker in ``console``, or None when there is none."""
    reasons = _MARKER_LINE.findall(console)
    if not reasons:
        return None
    reason = _CONTROL.sub("", reasons[-1]).strip()
    return (reason or "the agent's installer failed without a reason")[:MAX_REASON]


class InstallCheck:
    """Reads a booting pod's console at a bounded rate for the installer's failure marker."""

    def __init__(
        self, ec2: Ec2, interval: float = CONSOLE_CHECK_SECONDS, clock: Callable[[], float] = now
    ) -> None:
        self.ec2 = ec2
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}  # "uid/instance" -> when its console was last read
        self._mutex = threading.Lock()

    def _due(self, rec: PodRecord) -> bool:
        key, at = f"{rec.uid}/{rec.instance_id}", self.clock()
        with self._mutex:
            since = self._last.get(key, rec.launched_at or at)
            if at - since < self.interval:
                return False
            self._last[key] = at
            for old in [k for k, t in self._last.items() if at - t > _FORGET_AFTER]:
                del self._last[old]
        return True

    def failure(self, rec: PodRecord) -> str | None:
        """The install failure the console of ``rec``'s instance shows, when it is time to look."""
        if not rec.instance_id or not self._due(rec):
            return None
        try:
            return install_failure(self.ec2.console_output(rec.instance_id))
        except Ec2Error:
            return None
