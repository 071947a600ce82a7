"""The agent's watch on the instance metadata for Spot notices, and the runtime wrapper that reports them.

On a Spot instance EC2 writes an interruption notice to ``/latest/meta-data/spot/instance-action``
(``{"action": "terminate", "time": "..."}``) about two minutes before it interrupts the instance,
and may write a rebalance recommendation to ``/latest/meta-data/events/recommendations/rebalance``
(``{"noticeTime": "..."}``) earlier; both answer 404 while there is none. :class:`SpotWatch` polls
them with an IMDSv2 session token every few seconds (AWS recommends 5) on a daemon thread, each
request under a short timeout, so a machine without IMDS (or with a broken one) costs one short
failed request per back-off period and nothing else: the watch never raises and never blocks a
call. :class:`NoticedRuntime` wraps the agent's runtime and adds the latest notice to every
snapshot, so CheckApplicationHealth and the health watch report it (``PodStatus.spot_notice``).
Standard library only, like the rest of the agent.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import replace

from agent.model import PodSnapshot, SpotNotice
from agent.runtime import Runtime, WrappedRuntime

log = logging.getLogger("vkec2.agent.spot")

ACTION_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
TOKEN_PATH = "/latest/api/token"
#: How often the metadata is read (AWS recommends every 5 seconds).
POLL_SECONDS = 5.0
#: The longest wait between reads while the metadata service does not answer.
MAX_BACKOFF_SECONDS = 300.0
#: Each request's timeout: IMDS answers in milliseconds on an instance.
REQUEST_TIMEOUT = 1.0


class MetadataUnavailable(Exception):
    """The instance metadata service did not answer (not on EC2, or it is down)."""


def _json(text: str) -> dict[str, object]:
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def read_notice(endpoint: str, timeout: float = REQUEST_TIMEOUT) -> SpotNotice | None:
    """The current notice at ``endpoint`` (an interruption before a rebalance), or None.

    Raises :class:`MetadataUnavailable` when the service does not answer (404 means "no notice").
    """
    base = endpoint.rstrip("/")
    try:
        req = urllib.request.Request(
            f"{base}{TOKEN_PATH}", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            token = resp.read().decode()
    except (OSError, ValueError) as exc:
        raise MetadataUnavailable(f"{base}: {exc}") from None

    def get(path: str) -> str | None:
        r = urllib.request.Request(f"{base}{path}", headers={"X-aws-ec2-metadata-token": token})
        try:
            with urllib.request.urlopen(r, timeout=timeout) as resp:
                return str(resp.read().decode())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise MetadataUnavailable(f"{base}{path}: HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:
            raise MetadataUnavailable(f"{base}{path}: {exc}") from None

    action = get(ACTION_PATH)
    if action is not None:
        doc = _json(action)
        return SpotNotice("interruption", str(doc.get("action", "")), str(doc.get("time", "")))
    rebalance = get(REBALANCE_PATH)
    if rebalance is not None:
        return SpotNotice("rebalance", "", str(_json(rebalance).get("noticeTime", "")))
    return None


class SpotWatch:
    """Polls the metadata on a daemon thread; :meth:`current` is the latest notice (None: none)."""

    def __init__(
        self,
        endpoint: str,
        interval: float = POLL_SECONDS,
        read: Callable[[str], SpotNotice | None] = read_notice,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.interval = interval
        self._read = read
        self._notice: SpotNotice | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_change = on_change

    def current(self) -> SpotNotice | None:
        return self._notice

    def poll_once(self) -> bool:
        """Read the metadata once; False when it did not answer (the notice seen last is kept)."""
        try:
            notice = self._read(self.endpoint)
        except MetadataUnavailable as exc:
            log.debug("no instance metadata: %s", exc)
            return False
        if notice != self._notice:
            if notice is not None:
                log.warning("Spot %s notice: %s %s", notice.kind, notice.action, notice.time)
            self._notice = notice
            if self.on_change is not None:
                self.on_change()
        return True

    def _run(self) -> None:
        wait = self.interval
        while not self._stop.is_set():
            wait = self.interval if self.poll_once() else min(MAX_BACKOFF_SECONDS, max(wait, 1.0) * 2)
            self._stop.wait(wait)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vkec2-spot-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


class NoticedRuntime(WrappedRuntime):
    """A runtime whose snapshots carry the watch's current Spot notice; all else goes to ``inner``."""

    __slots__ = ("watch",)

    def __init__(self, inner: Runtime, watch: SpotWatch) -> None:
        super().__init__(inner)
        self.watch = watch
        watch.on_change = inner.notify  # a new notice wakes the health watchers

    def _shown(self, snap: PodSnapshot) -> PodSnapshot:
        notice = self.watch.current()
        return snap if notice is None else replace(snap, spot_notice=notice)

    def close(self) -> None:
        self.watch.stop()
        self.inner.close()
