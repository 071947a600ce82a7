"""Bad task arguments (from `celery call` or a replay) fail with an error that names the argument."""

from __future__ import annotations

from typing import Any

import pytest

from tasks import pods
from vkec2.errors import Vkec2Error


@pytest.mark.parametrize("task", [pods.create, pods.update, pods.delete])
@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"uid": 5}, "'uid' must be a pod UID, got 5"),
        ({"uid": "  "}, "'uid' must be a pod UID"),
        ({"uid": "a-uid", "uuid": "x"}, "unknown task argument(s) 'uuid'"),
        ({"uid": "a-uid", "generation": "7"}, "'generation' must be an integer, got '7'"),
        ({"uid": "a-uid", "generation": True}, "'generation' must be an integer, got True"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_touched(
    task: Any, kwargs: dict[str, Any], named: str
) -> None:
    with pytest.raises(Vkec2Error) as err:
        task.run(**kwargs)
    assert err.value.reason == "InvalidTaskArguments" and named in err.value.message


def test_tasks_are_registered_under_their_documented_names() -> None:
    from tasks import app

    for name in (
        "vkec2.pods.create",
        "vkec2.pods.update",
        "vkec2.pods.delete",
        "vkec2.health.sweep",
        "vkec2.maintenance.warm_pools",
        "vkec2.maintenance.quotas",
        "vkec2.maintenance.status_log",
        "vkec2.maintenance.gc",
    ):
        assert name in app.tasks
    routes = app.amqp.router
    assert routes.route({}, "vkec2.pods.create")["queue"].name == "pods"
    assert routes.route({}, "vkec2.health.sweep")["queue"].name == "health"
    assert routes.route({}, "vkec2.maintenance.gc")["queue"].name == "maintenance"
    # Each queue has its own exchange, so a health task is delivered to the health queue only.
    assert {q.name: q.exchange.name for q in app.conf.task_queues} == {
        "pods": "pods",
        "health": "health",
        "maintenance": "maintenance",
    }
