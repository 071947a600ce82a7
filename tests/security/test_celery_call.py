"""Garbage sent to a real worker with ``celery -A tasks call`` is refused in one clean log line.

The hypothesis suite (test_fuzz_inputs.py) runs the pod tasks in process; this test sends a few of
its shapes the way an operator would — ``celery -A tasks call NAME --kwargs JSON`` against a running
worker — and checks what the worker does with them: an ``InvalidTaskArguments`` failure logged as
expected (no traceback), no pod record written, and the worker still serving pods afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.fleet.conftest import ec2_proxy, make_fleet
from tests.support.fleet import FleetHarness, example_pod
from tests.support.services import wait_until
from vkec2.domain.models import Phase

__all__ = ["ec2_proxy", "make_fleet"]

GARBAGE = [
    {"uid": 5},
    {"uid": "../../etc/passwd"},
    {"uid": "a-uid", "generation": "7"},
    {"uid": "a-uid", "self": 1},
    {"continuation": "yes"},
    {},
]


@pytest.mark.slow
def test_celery_call_with_garbage_is_refused_without_a_traceback(
    make_fleet: Callable[..., FleetHarness],
) -> None:
    fleet = make_fleet()
    worker = fleet.start_worker(concurrency=2)
    for kwargs in GARBAGE:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tasks",
                "call",
                "vkec2.pods.create",
                "--kwargs",
                json.dumps(kwargs),
            ],
            capture_output=True,
            text=True,
            env=fleet.env(),
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr  # the message was published
    try:
        wait_until(lambda: worker.output().count("InvalidTaskArguments") >= len(GARBAGE), 60, "the refusals")
    except TimeoutError:
        raise AssertionError(worker.output()[-6000:]) from None
    out = worker.output()
    assert "Traceback" not in out, out[-3000:]
    assert "unknown task argument(s) 'self'" in out and "task argument 'uid' must be a pod UID" in out
    assert fleet.store.uids() == set()  # nothing was written for any of them

    uid = fleet.submit(example_pod("after-garbage"))  # and the worker still works
    fleet.wait_phase([uid], {Phase.RUNNING}, timeout=90)
