"""The chaos harness's own parts, quickly: the partition forwarder, scenario selection and the pod spread."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.chaos.faults import FaultLedger, Partition
from tests.chaos.invariants import Findings
from tests.chaos.report import rows, verdict
from tests.chaos.scenarios import FULL, REDUCED, SCENARIOS, Result
from tests.chaos.suite import select, spread


@pytest.fixture
def echo() -> Iterator[str]:
    """A loopback echo server; yields HOST:PORT."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    server.close()


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(1024):
            conn.sendall(data)


def _dial(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=2)
    sock.settimeout(0.5)
    return sock


def test_a_partition_silences_old_and_new_connections_and_heals(echo: str) -> None:
    part = Partition(echo).start()
    try:
        old = _dial(part.address)
        old.sendall(b"before")
        assert old.recv(64) == b"before"

        part.partition()
        old.sendall(b"lost")
        with pytest.raises(TimeoutError):
            old.recv(64)
        new = _dial(part.address)  # accepted, as a SYN would be answered, but nothing comes back
        new.sendall(b"lost too")
        with pytest.raises(TimeoutError):
            new.recv(64)

        part.heal()
        old.sendall(b"after")
        assert old.recv(64) == b"after"
        old.close()
        new.close()
    finally:
        part.stop()


def test_an_unknown_scenario_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown scenario\\(s\\) nope; choose from worker_kill"):
        select(["partition", "nope"])
    assert select(["beat_kill", "partition"]) == ["partition", "beat_kill"]
    assert len(select()) == len(SCENARIOS) == 7


def test_the_pods_are_spread_over_every_scenario() -> None:
    assert sum(spread(FULL.pods_total).values()) == 200
    assert set(spread(REDUCED.pods_total).values()) == {3}


def test_a_scenario_that_stopped_before_its_checks_is_not_reported_as_passing() -> None:
    stopped = Result("partition", 3, error="not run: the total deadline passed")
    checked = Result("beat_kill", 3, timings={"gc": 1.0, "total": 2.0})
    checked.findings.add("leaks", "1 instance of pod abc left")
    assert rows([stopped])[0][2:7] == ["not checked"] * 5
    assert rows([checked])[0][2:7] == ["ok", "FAIL (1)", "ok", "ok", "ok"]
    assert verdict(stopped) == verdict(checked) == "FAIL"
    assert Findings().ok and not checked.findings.ok


def test_the_ledger_knows_what_the_suite_broke() -> None:
    ledger = FaultLedger()
    ledger.instance("i-1", "agent died")
    ledger.note("partition")
    assert ledger.faulted("i-1") and not ledger.faulted("i-2")
    assert [what for _, what in ledger.events] == ["agent died i-1", "partition"]
