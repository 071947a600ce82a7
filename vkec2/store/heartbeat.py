"""Keeping held locks alive: a dead holder's lock expires in seconds, a slow live one's does not.

A pod lock has a short TTL (``celery.lock_ttl_seconds``, 15 s by default) so that the pods of a
worker killed in the middle of a step (SIGKILL, the OOM killer, a lost node) are free again within
seconds and the resume pass (:mod:`vkec2.fleet.resume`) can continue them. A live holder's step may
take longer than that TTL (a RunInstances retried by botocore and waiting for a rate-limit token can
take a minute), so while a task holds a lock this process's one heartbeat thread extends it every
third of its TTL, with the same compare-and-extend as :meth:`~vkec2.store.pods.Lock.extend` (only
while the token is still the holder's). It stops extending after ``max_hold`` seconds, so a step
that hangs for ever lets its pod go; the record's fence then refuses the hung step's late writes.
The leads of coalesced EC2 calls (:mod:`vkec2.store.batches`) are kept alive the same way, so a
killed leader holds the others up for seconds, not its call's whole budget. Written by hand because
redis-py's ``Lock`` renews only when its caller asks (no shared keep-alive thread) and knows nothing
of the record's fence.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("vkec2.store")

#: extend(name, token, ttl_ms) -> False when the lock is no longer held with ``token``.
Extend = Callable[[str, str, int], bool]


@dataclass
class _Held:
    name: str  # what the lock guards: a pod's UID, an EC2 batch kind
    token: str
    ttl_ms: int
    until: float  # monotonic: no extension after this
    next_at: float  # monotonic: the next extension


class LockHeartbeat:
    """The process's keep-alive thread for the locks of one kind (``what``: "pod", ...) it holds."""

    def __init__(self, extend: Extend, what: str = "pod") -> None:
        self._extend = extend
        self._what = what
        self._held: dict[str, _Held] = {}
        self._cond = threading.Condition()
        self._pid = 0

    def hold(self, name: str, token: str, ttl_ms: int, max_hold_s: float) -> None:
        """Keep the lock held with ``token`` alive for at most ``max_hold_s`` seconds (until :meth:`drop`)."""
        now = time.monotonic()
        with self._cond:
            self._start()
            self._held[token] = _Held(name, token, ttl_ms, now + max_hold_s, now + ttl_ms / 3000)
            self._cond.notify()

    def drop(self, token: str) -> None:
        """The holder released (or lost) the lock: stop extending it."""
        with self._cond:
            self._held.pop(token, None)

    def held(self) -> int:
        """How many locks the thread keeps alive now."""
        with self._cond:
            return len(self._held)

    def _start(self) -> None:
        """Start the thread in this process (again after a fork: threads do not survive one)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            name = f"{self._what.replace(' ', '-')}-lock-heartbeat"
            threading.Thread(target=self._run, name=name, daemon=True).start()

    def _due(self) -> list[_Held]:
        """Wait until some lock needs extending; those locks, their next time already set."""
        with self._cond:
            while True:
                now = time.monotonic()
                due = [h for h in self._held.values() if h.next_at <= now]
                if due:
                    for h in due:
                        h.next_at = now + h.ttl_ms / 3000
                    return due
                wake = min((h.next_at for h in self._held.values()), default=None)
                self._cond.wait(None if wake is None else wake - now)

    def _run(self) -> None:
        while True:
            for h in self._due():
                if time.monotonic() > h.until:
                    log.warning(
                        "%s %s: lock held for longer than its maximum; no longer extended", self._what, h.name
                    )
                    self.drop(h.token)
                    continue
                try:
                    kept = self._extend(h.name, h.token, h.ttl_ms)
                except Exception as exc:  # Redis unreachable: the lock may expire; the fence protects
                    log.warning("%s %s: lock not extended: %s", self._what, h.name, exc)
                    continue
                if not kept:
                    self.drop(h.token)
