"""An in-memory fake of the fleet's Agents port (vkec2/ports.py): agents that answer as a test programs them.

:class:`FakeAgents` answers serving / launch / status / terminate per instance ID as a test
programs it, including :class:`~vkec2.errors.AgentUnavailable` and
:class:`~vkec2.errors.AgentRejected`, and logs every call; :func:`app_status` builds the status an
agent reports. Nothing here sleeps or opens a socket; mypy proves at the end of this module that
the fake satisfies its port.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from vkec2.domain.agents import AgentTarget, AppStatus
from vkec2.errors import AgentError


def app_status(
    phase: str,
    *,
    reason: str = "",
    message: str = "",
    containers: Sequence[Mapping[str, Any]] = ({"name": "main", "ready": True, "restartCount": 0},),
    conditions: Sequence[Mapping[str, Any]] = (),
) -> AppStatus:
    """An :class:`AppStatus` as an agent reports it, for programming :class:`FakeAgents`."""
    return AppStatus(
        phase=phase,
        conditions=[dict(c) for c in conditions],
        container_statuses=[dict(c) for c in containers],
        reason=reason,
        message=message,
    )


class FakeAgents:
    """Agents by instance ID, answering as programmed; every call is logged as (method, instance ID).

    Defaults: serving, launch accepted, status Running, terminate accepted. A programmed
    :class:`~vkec2.errors.AgentError` is raised instead of answering.
    """

    def __init__(self) -> None:
        self.serving_default: bool | AgentError = True
        self.status_default: AppStatus | AgentError = app_status("Running")
        self.serving_by: dict[str, bool | AgentError] = {}
        self.launch_by: dict[str, AgentError] = {}
        self.status_by: dict[str, AppStatus | AgentError] = {}
        self.terminate_by: dict[str, AgentError] = {}
        self.update_by: dict[str, AgentError] = {}  # instance ID -> error of UpdateVolumes
        self.calls: list[tuple[str, str]] = []
        self.launched: dict[str, dict[str, Any]] = {}  # instance ID -> pod sent
        self.grace: dict[str, int] = {}  # instance ID -> grace of TerminateApplication
        self.waited: dict[str, bool] = {}  # instance ID -> whether TerminateApplication waited
        self.stubborn: set[str] = set()  # instance IDs whose workload ignores SIGTERM
        self.endpoints: dict[str, str] = {}  # instance ID -> endpoint last called
        self._mutex = threading.Lock()

    def _call(self, method: str, target: AgentTarget) -> None:
        with self._mutex:
            self.calls.append((method, target.instance_id))
            self.endpoints[target.instance_id] = target.endpoint

    def methods(self) -> list[str]:
        return [method for method, _ in self.calls]

    # -- the Agents port -------------------------------------------------------------------

    def serving(self, target: AgentTarget) -> bool:
        self._call("serving", target)
        answer = self.serving_by.get(target.instance_id, self.serving_default)
        if isinstance(answer, AgentError):
            raise answer
        return answer

    def launch(self, target: AgentTarget, pod: Mapping[str, Any]) -> None:
        self._call("launch", target)
        error = self.launch_by.get(target.instance_id)
        if error is not None:
            raise error
        self.launched[target.instance_id] = dict(pod)

    def update_volumes(self, target: AgentTarget, pod: Mapping[str, Any]) -> list[str]:
        self._call("update_volumes", target)
        error = self.update_by.get(target.instance_id)
        if error is not None:
            raise error
        return ["v"]

    def status(self, target: AgentTarget) -> AppStatus:
        self._call("status", target)
        answer = self.status_by.get(target.instance_id, self.status_default)
        if isinstance(answer, AgentError):
            raise answer
        return answer

    def terminate(self, target: AgentTarget, grace_seconds: int, *, wait: bool = True) -> None:
        self._call("terminate", target)
        error = self.terminate_by.get(target.instance_id)
        if error is not None:
            raise error
        self.grace[target.instance_id] = grace_seconds
        self.waited[target.instance_id] = wait
        if target.instance_id not in self.stubborn:  # the workload stops at SIGTERM
            self.status_by[target.instance_id] = app_status(
                "Failed", reason="Terminated", message="terminated on request"
            )


if TYPE_CHECKING:
    from vkec2.ports import Agents

    def _fake_satisfies_port(agents: FakeAgents) -> Agents:
        """Never runs: mypy proves here that the fake satisfies its port (vkec2/ports.py)."""
        return agents
