"""A Redis Sentinel group of a test's own: a master, a replica and three Sentinels on free loopback ports.

The Sentinels watch the master as :data:`MASTER` with a quorum of 2, judge it down after one
second and may fail over again after three; :meth:`SentinelGroup.failover` asks one of them for
a fail-over (``SENTINEL FAILOVER``) and returns once every Sentinel names the promoted replica;
:meth:`SentinelGroup.kill_master` SIGKILLs the master instead (the Sentinels notice on their own)
and :meth:`SentinelGroup.restart` starts a killed server again, which the Sentinels turn into a
replica. Only the processes it started are stopped, by PID.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, cast

import redis

from tests.support.services import ManagedProcess, free_port, port_open, start_redis, wait_until

MASTER = "mymaster"


class SentinelGroup:
    """Master + replica + three Sentinels; :attr:`url` is the fleet's ``sentinel://`` ``redis_url``."""

    def __init__(self, tmp: Path, log_dir: str | None = None) -> None:
        self.tmp = tmp
        self.log_dir = log_dir
        self.servers: dict[int, ManagedProcess] = {}
        self.sentinels: dict[int, ManagedProcess] = {}

    def start(self) -> SentinelGroup:
        # A server turned replica writes the RDB of its sync to its directory: the test's, not the cwd.
        master_port, replica_port = free_port(), free_port()
        master, _ = start_redis(master_port, log_dir=self.log_dir, args=self._files(master_port))
        self.servers[master_port] = master
        replica_args = ["--replicaof", "127.0.0.1", str(master_port), *self._files(replica_port)]
        replica, _ = start_redis(replica_port, log_dir=self.log_dir, args=replica_args)
        self.servers[replica_port] = replica
        binary = shutil.which("redis-server") or "redis-server"
        for _ in range(3):
            port = free_port()
            conf = self.tmp / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 3000\n"
            )
            sentinel = ManagedProcess("sentinel", [binary, str(conf), "--sentinel"], log_dir=self.log_dir)
            self.sentinels[port] = sentinel.start()
            wait_until(lambda: port_open(port), 15, f"a Sentinel on port {port}")  # noqa: B023
        wait_until(self._settled, 30, "the Sentinels to know the replica and each other", interval=0.2)
        return self

    def _files(self, port: int) -> list[str]:
        return ["--dir", str(self.tmp), "--dbfilename", f"dump-{port}.rdb"]

    @property
    def url(self) -> str:
        urls = [f"sentinel://127.0.0.1:{port}" for port in self.sentinels]
        return ";".join([urls[0] + "/0", *urls[1:]])

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, decode_responses=True)

    def master_port(self, sentinel_port: int | None = None) -> int:
        client = self._sentinel(sentinel_port or next(iter(self.sentinels)))
        try:
            address = cast(tuple[str, int], client.sentinel_get_master_addr_by_name(MASTER))
            return int(address[1])
        finally:
            client.close()

    def _settled(self) -> bool:
        master = self.master_port()
        replica = next(port for port in self.servers if port != master)
        client = redis.Redis(port=replica, decode_responses=True)
        try:
            if client.info("replication").get("master_link_status") != "up":
                return False
        finally:
            client.close()
        for port in self.sentinels:
            sentinel = self._sentinel(port)
            try:
                state = cast(dict[str, Any], sentinel.sentinel_master(MASTER))
                replicas = sentinel.sentinel_slaves(MASTER)
            finally:
                sentinel.close()
            if int(state["num-other-sentinels"]) != 2 or not any(r["port"] == replica for r in replicas):
                return False
        return True

    def failover(self) -> int:
        """Promote the replica through Sentinel; returns the new master's port once all Sentinels agree."""
        old = self.master_port()
        client = self._sentinel(next(iter(self.sentinels)))
        try:
            client.execute_command("SENTINEL", "FAILOVER", MASTER)  # type: ignore[no-untyped-call]
        finally:
            client.close()

        def moved() -> bool:
            return all(self.master_port(port) != old for port in self.sentinels)

        wait_until(moved, 30, "the Sentinels to fail over")
        return self.master_port()

    def kill_master(self) -> int:
        """SIGKILL the current master (the Sentinels notice and promote the replica); returns its port."""
        port = self.master_port()
        self.servers[port].kill()
        return port

    def restart(self, port: int) -> None:
        """Start the killed server on ``port`` again, empty; the Sentinels make it a replica."""
        self.servers[port].stop()
        self.servers[port], _ = start_redis(port, log_dir=self.log_dir, args=self._files(port))

    def stop(self) -> None:
        for proc in [*self.sentinels.values(), *self.servers.values()]:
            proc.stop()
