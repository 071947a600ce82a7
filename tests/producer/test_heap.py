"""The producer gives the memory of a full list or a burst of watch events back to the OS."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

import producer.pods
from producer.heap import _malloc_trim, release_freed
from producer.pods import RELEASE_EVERY_EVENTS, PodWatcher

MIB = 2**20


@pytest.mark.skipif(_malloc_trim() is None, reason="no glibc malloc_trim here")
def test_release_freed_unmaps_what_a_burst_left_behind() -> None:
    rss = psutil.Process().memory_info
    # 60 MiB in 1 KiB strings (glibc's heap, not pymalloc's), one in ten kept: the freed pages lie
    # between live ones, so free() alone cannot shrink the heap.
    burst = [bytes(1024) + str(i).encode() for i in range(60 * 1024)]
    kept = burst[::10]
    del burst
    before = rss().rss
    release_freed()
    after = rss().rss
    assert before - after > 20 * MIB, f"RSS {before / MIB:.0f} -> {after / MIB:.0f} MiB"
    assert len(kept) == 6 * 1024


class FakeKube:
    def __init__(self, events: int, stop: threading.Event) -> None:
        self.events, self.stop = events, stop

    def list_pods(self, node: str) -> tuple[list[dict[str, Any]], str]:
        return [], "1"

    def watch_pods(self, node: str, rv: str, timeout: int) -> Iterator[tuple[str, dict[str, Any]]]:
        for i in range(self.events):
            yield "ADDED", {"metadata": {"uid": f"u{i}", "resourceVersion": str(i + 2)}}
        self.stop.set()


class FakeSync:
    def __init__(self) -> None:
        self.seen = 0

    def reconcile(self, pods: list[dict[str, Any]]) -> None:
        pass

    def on_pod(self, obj: dict[str, Any]) -> None:
        self.seen += 1


def test_the_pod_watch_releases_after_a_full_list_and_every_thousand_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    released: list[int] = []
    sync = FakeSync()
    monkeypatch.setattr(producer.pods, "release_freed", lambda: released.append(sync.seen))
    stop = threading.Event()
    events = 2 * RELEASE_EVERY_EVENTS + 500
    watcher = PodWatcher(FakeKube(events, stop), sync, "node-a")  # type: ignore[arg-type]

    watcher.run(stop)

    assert sync.seen == events
    assert released == [0, RELEASE_EVERY_EVENTS, 2 * RELEASE_EVERY_EVENTS]
    assert watcher.resource_version == str(events + 1)
