"""The pod lifecycle tasks: ``vkec2.pods.create``, ``vkec2.pods.update``, ``vkec2.pods.delete``.

Each takes keyword arguments only — ``uid`` (the pod UID) and optionally ``generation`` — so any of
them can be replayed by hand with
``celery -A tasks call vkec2.pods.create --kwargs '{"uid": "..."}'`` and converges to the same
single instance; arguments of the wrong type or name are refused with ``InvalidTaskArguments``
(an expected failure: no traceback) before anything is read or written. A task locks the pod,
runs one step of :class:`vkec2.lifecycle.Lifecycle`, and for the create chain and the delete
(while the workload uses its grace period) publishes the next step with a countdown. A chain is
self-fencing: the record names the task ID of the one scheduled next step, so a stale copy
(redelivered after a crash, or duplicated) exits at once, while a task sent from outside (the
producer, a replay, the health sweep, the resume task) always takes over the chain. Every step a
chain schedules is due in Redis at its publish time plus its countdown (in the same fenced write
that names it), and the due entry is cleared when the chain ends, so
``vkec2.maintenance.resume`` publishes a lost step again within seconds.

No exception leaves a chain dead (the table "What each error does" in docs/architecture.md): a
busy lock is retried soon; a retryable error (throttled or unreachable EC2, a not-yet-visible
instance, Redis unreachable) is retried with back-off, at most :data:`EC2_RETRY_MAX` times; a
create step that fails with anything else, or runs out of retries, fails the pod with the error's
reason (its instances terminated); a delete retries every error, and one that runs out of retries
stays due and is published again by the resume task, since a deleted pod must lose its instance.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from celery import Task
from celery.utils import uuid
from celery.utils.time import get_exponential_backoff_interval

from tasks.app import app
from tasks.runtime import Fleet, fleet
from vkec2 import contract
from vkec2.domain.models import DueStep, PodRecord
from vkec2.errors import InvalidTaskArguments, LockBusy, StaleFence, UnknownPod, Vkec2Error
from vkec2.observability import logs
from vkec2.store.redis_store import Lock, StoreError

log = logging.getLogger(__name__)

Step = Callable[[Fleet, Lock, PodRecord], str]

LOCK_RETRY_SECONDS = 1.0
#: Retries of a busy lock: a day of 1-2 s retries (the lock's holder is alive: its heartbeat keeps it).
LOCK_RETRY_MAX = 60_000
EC2_RETRY_MAX = 20
EC2_RETRY_BACKOFF_FACTOR = 2  # full jitter halves the mean: the first retries average 1, 2, 4 ... s
EC2_RETRY_BACKOFF_MAX = 30  # seconds, within celery.max_countdown_seconds's default


#: What a pod UID looks like (a Kubernetes UID, or standalone mode's UUID); anything else is refused
#: before the store is asked, so a hand-made ``celery call`` with garbage touches nothing.
POD_UID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


# ``self`` is positional-only and ``uid`` has a default, so that no keyword a ``celery call`` sends
# (``self``, a missing ``uid``) makes Python raise TypeError before the arguments are checked.
def _check_args(
    uid: Any, generation: Any, continuation: Any = False, extra: Mapping[str, Any] | None = None
) -> None:
    """Refuse arguments the task cannot take, naming the first problem (InvalidTaskArguments)."""
    if extra:
        raise _unknown(extra)
    if not isinstance(uid, str) or not POD_UID_RE.fullmatch(uid):
        raise InvalidTaskArguments(f"task argument 'uid' must be a pod UID, got {_short(uid)}")
    if generation is not None and (not isinstance(generation, int) or isinstance(generation, bool)):
        raise InvalidTaskArguments(f"task argument 'generation' must be an integer, got {_short(generation)}")
    if not isinstance(continuation, bool):
        raise InvalidTaskArguments(
            f"task argument 'continuation' must be true or false, got {_short(continuation)}"
        )


#: The keyword arguments a pod task takes.
KNOWN_ARGUMENTS = ("uid", "generation", "continuation")


def _unknown(names: Iterable[str]) -> InvalidTaskArguments:
    shown = ", ".join(sorted(repr(name) for name in names))
    return InvalidTaskArguments(f"unknown task argument(s) {shown} (known: {', '.join(KNOWN_ARGUMENTS)})")


class PodTask(Task):  # type: ignore[misc]
    """The pod tasks' class: a ``self`` keyword (Celery's own ``__call__`` takes ``self``, so a
    ``celery call --kwargs '{"self": ...}'`` would be a TypeError in Celery) is refused first."""

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        if "self" in kwargs:
            raise _unknown(name for name in kwargs if name not in KNOWN_ARGUMENTS)
        return super().__call__(*args, **kwargs)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def retryable(exc: BaseException) -> bool:
    """Trying the same step again later can help: Redis unreachable, or a retryable fleet error."""
    return isinstance(exc, StoreError) or (isinstance(exc, Vkec2Error) and exc.retryable)


def failure(exc: BaseException, retries: int) -> tuple[str, str]:
    """The reason and message a pod fails with when ``exc`` ended its create chain."""
    if isinstance(exc, Vkec2Error):
        reason, message = exc.reason, exc.message
    elif isinstance(exc, StoreError):
        reason, message = "RedisUnavailable", f"{type(exc).__name__}: {exc}"
    else:  # a bug or an unexpected answer: still a bounded outcome, with what it was
        reason, message = "InternalError", f"{type(exc).__name__}: {exc}"
    if retryable(exc):
        message += f" (still failing after {retries} retries)"
    return reason, message


def step_retries(task: Task) -> int:
    """How often this step was retried after an error (its :data:`~vkec2.contract.STEP_RETRIES_HEADER`).

    Celery's ``request.retries`` also counts the retries of a busy lock, which may be many while
    another task holds the pod; those must not spend the budget of :data:`EC2_RETRY_MAX`.
    """
    value = (task.request.headers or {}).get(contract.STEP_RETRIES_HEADER, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _retry_later(task: Task, exc: Exception) -> Exception:
    """Re-deliver this same task (same ID) later: the lock is busy or EC2 throttled us.

    A busy lock is retried soon and without a practical limit (:data:`LOCK_RETRY_MAX`; Celery's
    ``max_retries=None`` would mean the task's default of 3, not "no limit"). An error is retried after
    Celery's exponential back-off with full jitter (a random whole number of seconds up to
    ``2 ** (retries + 1)``, at most :data:`EC2_RETRY_BACKOFF_MAX`), at most :data:`EC2_RETRY_MAX`
    times (counted by :func:`step_retries`; past them ``exc`` is raised), and the pod's due step of
    this task is moved to when the retry should start.
    """
    if isinstance(exc, LockBusy):
        delay = LOCK_RETRY_SECONDS * (1 + random.random())
        return cast(Exception, task.retry(exc=exc, countdown=delay, max_retries=LOCK_RETRY_MAX))
    retries = step_retries(task)
    if retries >= EC2_RETRY_MAX:
        raise exc
    delay = get_exponential_backoff_interval(
        factor=EC2_RETRY_BACKOFF_FACTOR, retries=retries, maximum=EC2_RETRY_BACKOFF_MAX, full_jitter=True
    )
    uid = (task.request.kwargs or {}).get("uid")
    if isinstance(uid, str):
        with contextlib.suppress(StoreError):  # Redis may be why we retry; the due time is a hint
            fleet().store.postpone(uid, task.name, time.time() + delay)
    headers = {**(task.request.headers or {}), contract.STEP_RETRIES_HEADER: retries + 1}
    return cast(
        Exception,
        task.retry(exc=exc, countdown=delay, max_retries=LOCK_RETRY_MAX, headers=headers),
    )


def _one_step(task: Task, uid: str, step: Step, *, retry_any_error: bool = False) -> str:
    """Lock the pod, run ``step`` on its fresh record, and turn contention into retries.

    A busy lock or a retryable error (throttled/unreachable EC2, Redis unreachable) re-delivers
    this same task later (with ``retry_any_error``, any error); a stale fence means another task
    owns the pod now; a UID with no record is reported, not raised.
    """
    ctx = fleet()
    try:
        celery = ctx.settings.celery
        ttl_ms = int(celery.lock_ttl_seconds * 1000)
        with ctx.store.step_locked(uid, ttl_ms, max_hold_s=celery.lock_max_hold_seconds) as lock:
            rec = lock.record  # read with the lock, in one round trip
            if rec is None:
                return "unknown pod"
            with logs.bound(namespace=rec.namespace, name=rec.name, endpoint=rec.endpoint):
                return step(ctx, lock, rec)
    except UnknownPod:
        return "unknown pod"
    except StaleFence:
        return "superseded"
    except LockBusy as exc:
        raise _retry_later(task, exc) from exc
    except Exception as exc:
        if retryable(exc) or retry_any_error:
            raise _retry_later(task, exc) from exc
        raise


@app.task(name=contract.POD_CREATE, bind=True, base=PodTask, throws=(InvalidTaskArguments,))
def create(
    self: Task, /, uid: str = "", generation: int | None = None, continuation: bool = False, **extra: Any
) -> str:
    """Advance the pod one step towards Running and schedule the next step."""
    _check_args(uid, generation, continuation, extra)

    def step(ctx: Fleet, lock: Lock, rec: PodRecord) -> str:
        if continuation and rec.next_task != self.request.id:
            return "superseded"
        try:
            delay = ctx.lifecycle.create_step(lock, rec)
        except (StaleFence, UnknownPod, LockBusy):
            raise
        except Exception as exc:
            if retryable(exc) and step_retries(self) < EC2_RETRY_MAX:
                raise  # the same step again after a back-off
            log.warning("create step of %s failed: %r", uid, exc)
            reason, message = failure(exc, step_retries(self))
            ctx.lifecycle.fail(lock, rec, reason, message)  # retrying cannot fix it (any more)
            lock.finish_chain(contract.POD_CREATE)
            return rec.phase.value
        if delay is not None:
            _continue(create, lock, uid, delay)
        else:
            lock.finish_chain(contract.POD_CREATE)
        return rec.phase.value

    return _one_step(self, uid, step)


def _continue(task: Task, lock: Lock, uid: str, delay: float, generation: int | None = None) -> None:
    """Publish the chain's next step with a countdown, then name it in the record (self-fencing).

    The same fenced write makes the pod due that step at its publish time plus its countdown, so
    the resume task publishes it again if the message is lost (docs/maintenance.md).
    """
    next_id = uuid()
    kwargs = {**contract.pod_task_kwargs(uid, generation), "continuation": True}
    sent = time.time()
    task.apply_async(kwargs=kwargs, countdown=delay, task_id=next_id)
    lock.schedule_next(next_id, DueStep(uid, task.name, generation), sent + delay)


@app.task(name=contract.POD_UPDATE, bind=True, base=PodTask, throws=(InvalidTaskArguments,))
def update(self: Task, /, uid: str = "", generation: int | None = None, **extra: Any) -> str:
    """Apply in-place changes of the pod's spec (tags) or record that a replacement is needed."""
    _check_args(uid, generation, False, extra)

    def step(ctx: Fleet, lock: Lock, rec: PodRecord) -> str:
        ctx.lifecycle.update(lock, rec)
        return rec.phase.value

    return _one_step(self, uid, step)


@app.task(name=contract.POD_DELETE, bind=True, base=PodTask, throws=(InvalidTaskArguments,))
def delete(
    self: Task, /, uid: str = "", generation: int | None = None, continuation: bool = False, **extra: Any
) -> str:
    """Stop the workload, terminate the instance, record Terminated. Delete wins over create.

    Like the create chain, one short step per message: the first asks the agent to stop the
    workload within the grace period, later ones (scheduled by countdown, self-fencing) poll it
    and terminate the instance once it is gone or the grace period is over.
    """
    _check_args(uid, generation, continuation, extra)

    def step(ctx: Fleet, lock: Lock, rec: PodRecord) -> str:
        if continuation and rec.next_task != self.request.id:
            return "superseded"
        delay = ctx.lifecycle.delete(lock, rec, generation)
        if delay is not None:
            _continue(delete, lock, uid, delay, generation)
        else:
            lock.finish_chain(contract.POD_DELETE)
        return rec.phase.value

    # A delete must not be lost: any error is retried (bounded), then the health sweep resumes it.
    return _one_step(self, uid, step, retry_any_error=True)
