"""The wire contract (:mod:`vkec2.contract`): task names, their queues, what beat and the workers use."""

from __future__ import annotations

from fnmatch import fnmatchcase

from vkec2 import contract
from vkec2.broker.app import ROUTES, beat_schedule
from vkec2.config import Settings


def test_every_task_is_routed_to_the_queue_its_name_says() -> None:
    for task in (*contract.POD_TASKS, *contract.PERIODIC_TASKS):
        queues = [route["queue"] for pattern, route in ROUTES.items() if fnmatchcase(task, pattern)]
        assert queues == [task.split(".")[1]], task
    assert {route["queue"] for route in ROUTES.values()} == set(contract.QUEUES)


def test_the_wire_names_keep_their_spelling() -> None:
    # Renaming any of these breaks queued messages and tagged instances of a running fleet.
    assert contract.POD_TASKS == ("vkec2.pods.create", "vkec2.pods.update", "vkec2.pods.delete")
    assert contract.QUEUES == ("pods", "health", "maintenance")
    assert contract.TAG_POD_UID == "vkec2.io/pod-uid"
    assert contract.INSTANCE_ID_ANNOTATION.startswith(contract.ANNOTATION_PREFIX)


def test_beat_sends_exactly_the_periodic_tasks() -> None:
    schedule = beat_schedule(Settings())
    assert tuple(schedule) == contract.PERIODIC_TASKS
    assert all(entry["task"] == name for name, entry in schedule.items())


def test_the_workers_register_every_task_under_its_contract_name() -> None:
    import tasks
    from tasks.app import app

    assert tasks is not None
    assert {*contract.POD_TASKS, *contract.PERIODIC_TASKS} <= set(app.tasks)


def test_pod_task_kwargs() -> None:
    assert contract.pod_task_kwargs("u") == {"uid": "u"}
    assert contract.pod_task_kwargs("u", 0) == {"uid": "u", "generation": 0}
