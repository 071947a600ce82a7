"""Coalesced EC2 calls: the fleet's "is it running yet" polls and terminations, many pods per call.

EC2 takes up to 1,000 instance IDs per DescribeInstances or TerminateInstances, and every account
has a request budget (see :mod:`vkec2.ec2.ratelimit`). One call per pod wastes it: 200 pods booting
at once poll 200 times a second, and deleting 1,000 pods sends 1,000 terminations.
:class:`BatchingGateway` is the EC2 gateway with :meth:`~BatchingGateway.describe` and
:meth:`~BatchingGateway.terminate` coalesced across every worker of the fleet through Redis
(:mod:`vkec2.store.batches`): a caller adds its IDs to the wanted set, and whichever caller takes
the batch lead waits one short window (``aws.batch_window_seconds`` for describes,
``aws.terminate_batch_window_seconds`` for terminations) for others to join, sends one call for up
to 1,000 IDs and publishes the answers; the others wait for their answer (a describe answer younger
than the window counts), lead a batch themselves when the lead is free (a killed leader's lapses
within seconds: its short TTL lives only while the leader's heartbeat extends it), and fall back to
a call of their own if none comes within one call's worst case. Both methods keep the plain
gateway's contract — a describe returns fresh descriptions, a terminate returns (with the IDs EC2
did not know) once a TerminateInstances naming the IDs was sent — so callers need not know.
Written here because no library coalesces calls across processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from vkec2.config import Settings
from vkec2.domain.instances import Instance
from vkec2.ec2.gateway import Ec2Gateway
from vkec2.store.batches import DESCRIBE, LEAD_TTL_MS, TERMINATE
from vkec2.store.redis_store import Store

#: The most instance IDs one DescribeInstances / TerminateInstances takes.
BATCH_LIMIT = 1000
#: How often a waiting caller looks for its answer.
WAIT_STEP_SECONDS = 0.02


class BatchingGateway(Ec2Gateway):
    """The EC2 gateway whose describes and terminations are shared by the whole fleet."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        limiter: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(settings, store, limiter=limiter)
        self.batches = store
        self.windows = {
            DESCRIBE: settings.aws.batch_window_seconds,
            TERMINATE: settings.aws.terminate_batch_window_seconds,
        }
        self._clock = clock
        self._sleep = sleep

    def _call_budget(self) -> float:
        """The worst case of one EC2 call: every attempt's timeouts and the rate-limit wait."""
        aws = self.settings.aws
        per_attempt = aws.connect_timeout_seconds + aws.read_timeout_seconds
        return per_attempt * aws.max_attempts + self.settings.rate_limits.max_wait_seconds

    def _lead(self, kind: str, send: Callable[[list[str]], None], mine: Sequence[str]) -> bool:
        """Lead one batch of ``kind`` if nobody else does: gather, then ``send`` it. Whether led.

        The lead's TTL is short and this process's heartbeat extends it while the batch is gathered
        and sent (for at most the window and one call's worst case): a leader killed mid-call lets
        another caller lead within seconds."""
        window = self.windows[kind]
        token = self.batches.lead_batch(kind, LEAD_TTL_MS)
        if token is None:
            return False
        heartbeat = self.batches.lead_heartbeat
        heartbeat.hold(kind, token, LEAD_TTL_MS, window + self._call_budget())
        try:
            self._sleep(window)
            gathered = self.batches.take_wanted(kind, BATCH_LIMIT)
            batch = list(dict.fromkeys([*mine, *gathered]))
            for start in range(0, len(batch), BATCH_LIMIT):
                send(batch[start : start + BATCH_LIMIT])
        finally:
            heartbeat.drop(token)
            self.batches.end_batch(kind, token)
        return True

    def describe(self, instance_ids: Iterable[str]) -> dict[str, Instance]:
        ids = list(dict.fromkeys(instance_ids))
        window = self.windows[DESCRIBE]
        if not ids or window <= 0:
            return super().describe(ids)
        asked = self._clock()
        self.batches.want(DESCRIBE, ids, asked)

        def send(batch: list[str]) -> None:
            found = Ec2Gateway.describe(self, batch)
            self.batches.publish_seen({i: found.get(i) for i in batch}, self._clock())

        deadline = asked + window + self._call_budget()
        while True:
            answers = self.batches.seen_since(ids, asked)
            if len(answers) == len(ids):
                return {i: inst for i, inst in answers.items() if inst is not None}
            if self._lead(DESCRIBE, send, [i for i in ids if i not in answers]):
                continue
            if self._clock() > deadline:  # no answer within one call's worst case: ask EC2 ourselves
                return super().describe(ids)
            self._sleep(WAIT_STEP_SECONDS)

    def terminate(self, instance_ids: Sequence[str]) -> list[str]:
        ids = list(dict.fromkeys(instance_ids))
        window = self.windows[TERMINATE]
        if not ids or window <= 0:
            return super().terminate(ids)
        asked = self._clock()
        self.batches.want(TERMINATE, ids, asked)

        def send(batch: list[str]) -> None:
            unknown = set(Ec2Gateway.terminate(self, batch))
            self.batches.publish_terminated({i: i not in unknown for i in batch}, self._clock())

        deadline = asked + window + self._call_budget()
        while True:
            done = self.batches.terminated_since(ids, asked)
            if len(done) == len(ids):
                return [i for i in ids if not done[i]]
            if self._lead(TERMINATE, send, [i for i in ids if i not in done]):
                continue
            if self._clock() > deadline:
                return [i for i in ids if i in done and not done[i]] + super().terminate(
                    [i for i in ids if i not in done]
                )
            self._sleep(WAIT_STEP_SECONDS)

    def terminate_soon(self, instance_ids: Sequence[str]) -> list[str] | None:
        """Terminate without waiting for others: the IDs join the wanted set, and a caller sends
        every wanted ID at most once per ``aws.terminate_batch_window_seconds`` fleet-wide (the lead
        is held for the window, not released). None while this caller's IDs are not sent yet: the
        caller asks again after a while, holding no thread meanwhile."""
        ids = list(dict.fromkeys(instance_ids))
        window = self.windows[TERMINATE]
        if not ids or window <= 0:
            return super().terminate(ids)
        done = self.batches.terminated_since(ids, 0)
        missing = [i for i in ids if i not in done]
        if missing:
            self.batches.want(TERMINATE, missing, self._clock())
            if self.batches.lead_batch(TERMINATE, int(window * 1000)) is None:
                return None  # someone sent a batch within the window: ours goes with the next
            batch = list(dict.fromkeys([*missing, *self.batches.take_wanted(TERMINATE, BATCH_LIMIT)]))
            for start in range(0, len(batch), BATCH_LIMIT):
                chunk = batch[start : start + BATCH_LIMIT]
                not_found = set(Ec2Gateway.terminate(self, chunk))
                self.batches.publish_terminated({i: i not in not_found for i in chunk}, self._clock())
            done = self.batches.terminated_since(ids, 0)
        unknown = [i for i in ids if not done.get(i, True)]
        # A NotFound is the caller's to judge (gone, or not visible yet: then it asks again, and
        # the instance must be sent again rather than answered from this NotFound).
        self.batches.forget_terminated(unknown)
        return unknown
