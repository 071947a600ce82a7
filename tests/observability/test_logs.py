"""Log context: every line a task logs names the pod (UID, namespace, name) and the task ID.

A real worker subprocess logs JSON lines at verbosity 2 while one pod goes to Running and is
deleted; the lifecycle's lines are read back from its output. Formatters are also checked in
process on records logged under a bound context.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from tests.support.fleet import FleetHarness, example_pod
from vkec2.config import LoggingSettings
from vkec2.domain.models import Phase
from vkec2.observability import logs

Make = Callable[..., FleetHarness]


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_task_lines_carry_pod_and_task_context(make_fleet: Make) -> None:
    fleet = make_fleet(logging={"format": "json", "verbosity": 2})
    worker = fleet.start_worker(concurrency=2, queues="pods")
    pod = example_pod("logged-web", namespace="team-a")
    uid = fleet.submit(pod)
    fleet.wait_phase([uid], {Phase.RUNNING})
    fleet.delete(uid)
    fleet.wait_phase([uid], {Phase.TERMINATED})

    lines = json_lines(worker.output())
    assert lines, worker.output()[-2000:]
    task_lines = [d for d in lines if d["logger"].startswith("vkec2.")]
    transitions = [d for d in task_lines if " -> " in d["msg"]]
    phases = [d["msg"].split(":")[0] for d in transitions]
    assert "phase Pending -> Provisioning" in phases and "phase Terminating -> Terminated" in phases
    for line in task_lines:
        assert line["uid"] == uid, line
        assert line["namespace"] == "team-a" and line["name"] == "logged-web", line
        assert line["task_id"], line
        # Verbosity 2: thread and task labels.
        assert line["thread"] and line["task"] in {"vkec2.pods.create", "vkec2.pods.delete"}, line
    # Lines of steps that run once the instance has an agent endpoint name it.
    later = [d for d in transitions if d["msg"].startswith(("phase Launching", "phase Running"))]
    assert later and all(d["endpoint"] for d in later), later
    # Different tasks, different IDs; lines outside tasks carry no pod context.
    assert len({d["task_id"] for d in task_lines}) >= 2
    assert any("uid" not in d for d in lines if d["logger"].startswith("celery"))


def _record(message: str, exc: bool = False) -> logging.LogRecord:
    record = logging.LogRecord("vkec2.test", logging.INFO, __file__, 1, message, None, None)
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            import sys

            record.exc_info = sys.exc_info()
    return record


def test_kv_lines_put_context_first_and_the_message_last() -> None:
    fmt = logs.KeyValueFormatter("worker", verbosity=1)
    with logs.bound(uid="u-1", namespace="ns", name="web", task_id="t-1", task="vkec2.pods.create"):
        line = fmt.format(_record('launched "i-1"\nsecond line'))
    assert " component=worker uid=u-1 namespace=ns name=web task_id=t-1 msg=" in line
    assert line.endswith('msg=launched "i-1"\\nsecond line') and "\n" not in line
    assert "task=" not in line and "thread=" not in line  # verbosity 1
    verbose = logs.KeyValueFormatter("worker", verbosity=2)
    with logs.bound(uid="u-1", task="vkec2.pods.create", endpoint="10.0.0.1:8200"):
        line = verbose.format(_record("x"))
    assert "thread=MainThread task=vkec2.pods.create endpoint=10.0.0.1:8200 msg=x" in line
    assert "uid=" not in fmt.format(_record("outside"))  # the context ended with the block
    assert 'exc="Traceback' in fmt.format(_record("failed", exc=True))


def test_context_is_per_thread_and_restored() -> None:
    seen: dict[str, dict[str, str]] = {}
    token = logs.bind(uid="main")

    def other() -> None:
        seen["other"] = logs.current()
        with logs.bound(uid="other"):
            seen["inner"] = logs.current()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == {"other": {}, "inner": {"uid": "other"}}
    assert logs.current() == {"uid": "main"}
    logs.reset(token)
    assert logs.current() == {}


def test_setup_writes_json_lines_and_replaces_its_own_handler() -> None:
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        logs.setup(LoggingSettings(format="json"), "producer", level="INFO", stream=io.StringIO())
        logs.setup(LoggingSettings(format="json"), "producer", level="INFO", stream=stream)
        assert len(root.handlers) == len(before) + 1
        with logs.bound(uid="u-2", task_id="t-2"):
            logging.getLogger("vkec2.test").info("hello %s", "world")
        doc = json.loads(stream.getvalue().splitlines()[-1])
        assert doc["msg"] == "hello world" and doc["uid"] == "u-2" and doc["task_id"] == "t-2"
        assert doc["component"] == "producer" and doc["level"] == "INFO"
    finally:
        for handler in list(root.handlers):
            if handler not in before:
                root.removeHandler(handler)
        root.setLevel(level)
