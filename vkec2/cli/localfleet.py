"""``vkec2 up``: the whole fleet on one machine, on loopback, showing the example pods run and go.

It starts (or reuses) Redis, moto's EC2 server, the agent simulator (running each pod's containers
as real processes of this machine), a Celery worker, beat, Flower and the producer in standalone
mode on a copy of the example pods shipped in the package (``vkec2/examples/pods/``, read through
:mod:`importlib.resources`); shows live progress (pods by phase, instances, warm pool) until every
example pod is Running, then that each is Ready and what it printed (:mod:`vkec2.cli.workloads`:
the ConfigMap and Secret values really arrive); removes one manifest
and shows its pod terminate and its instance go; prints a summary (pods, instances, EC2 calls,
elapsed time) and stops everything it started, by PID. ``--keep`` leaves the fleet running and
prints how to reach Flower and how to stop it. Anything that fails to start ends the command with
a clear message and a non-zero exit status; so does a missing moto server (the ``local`` extra).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import boto3
import click
import yaml
from rich.console import Console
from rich.live import Live
from rich.table import Table

from vkec2.broker.app import worker_argv
from vkec2.cli.common import Command, exit_with
from vkec2.cli.procs import (
    ManagedProcess,
    free_port,
    port_open,
    start_agent_sim,
    start_moto,
    start_redis,
    wait_until,
)
from vkec2.cli.workloads import show_workloads
from vkec2.config import Settings
from vkec2.config.redaction import redact
from vkec2.contract import POD_CREATE, TAG_CLUSTER, TAG_POD_NAME
from vkec2.domain.instances import tag_map
from vkec2.domain.models import Phase
from vkec2.store.redis_store import Store, reachable

LOCAL_AMI = "ami-12c6146b"  # one of the AMIs moto's EC2 knows
REMOVED_MANIFEST = "nightly-job.yaml"
#: The example pods, shipped as package data (pyproject.toml) so a wheel's ``vkec2 up`` has them.
BUNDLED_MANIFESTS = ("examples", "pods")
#: What ``vkec2 up`` runs besides the fleet: moto's server (Flask), installed by the ``local`` extra.
LOCAL_EXTRA_MODULES = ("moto", "flask", "flask_cors")


@dataclass(frozen=True)
class UpOptions:
    """The options of ``vkec2 up``."""

    manifests: str | None  # None: the bundled examples
    redis_url: str | None
    keep: bool
    no_flower: bool
    timeout: float


class UpError(Exception):
    """The local fleet could not start or did not converge; the message says what and where."""


@dataclass
class LocalFleet:
    """The processes and addresses of one local fleet."""

    workdir: Path
    console: Console
    procs: list[ManagedProcess] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)

    def start(self, name: str, argv: Sequence[str], ready: Callable[[], bool], timeout: float = 60) -> None:
        proc = ManagedProcess(name, list(argv), log_dir=str(self.workdir / "logs")).start()
        self.procs.append(proc)

        def up() -> bool:
            if not proc.alive():
                raise UpError(
                    f"{name} exited during start-up; its log ({proc.log_path}) ends with:\n"
                    f"{proc.output()[-2000:]}"
                )
            return ready()

        try:
            wait_until(up, timeout, name, interval=0.2)
        except TimeoutError as exc:
            raise UpError(f"{name} did not become ready within {timeout:.0f}s; log: {proc.log_path}") from exc
        self.console.print(f"  [green]✓[/green] {name} (pid {proc.pid})")

    def service(self, what: str, start: Callable[[], tuple[ManagedProcess, str]]) -> str:
        """Start a service with a ``vkec2.procs.start_*`` function; returns its address."""
        try:
            proc, address = start()
        except (RuntimeError, TimeoutError) as exc:
            raise UpError(f"{what} did not start: {exc}") from exc
        self.procs.append(proc)
        self.console.print(f"  [green]✓[/green] {what} at {address} (pid {proc.pid})")
        return address

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def _choose_redis(fleet: LocalFleet, url: str | None) -> str:
    """An explicit URL; else a private redis-server; else a Redis already listening on 6379."""
    if url:
        if not reachable(url, timeout=1):
            raise UpError(f"cannot reach Redis at {redact(url)}")
        fleet.console.print(f"  [green]✓[/green] redis at {redact(url)} (reused)")
        return url
    if shutil.which("redis-server"):
        base = fleet.service("redis-server", lambda: start_redis(log_dir=str(fleet.workdir / "logs")))
        return f"{base}/0"
    if reachable("redis://127.0.0.1:6379/0", timeout=1):
        fleet.console.print("  [green]✓[/green] redis at 127.0.0.1:6379 (reused)")
        return "redis://127.0.0.1:6379/0"
    raise UpError(
        "no Redis: install redis-server (Debian/Ubuntu: apt-get install redis-server; "
        "macOS: brew install redis) or pass --redis-url"
    )


def _config(cluster: str, redis_url: str, moto_url: str, agent_endpoint: str) -> dict[str, Any]:
    return {
        "cluster_name": cluster,
        "redis_url": redis_url,
        # One EC2 call (3 x (1 + 3) s + 3 s of rate-limit wait) fits in the 15 s pod lock.
        "aws": {
            "endpoint_url": moto_url,
            "max_attempts": 3,
            "connect_timeout_seconds": 1,
            "read_timeout_seconds": 3,
        },
        "rate_limits": {"max_wait_seconds": 3},
        "ec2": {"image_id": LOCAL_AMI, "instance_type": "m5.large"},
        # The example GPU pod asks for its instance type by annotation (docs/security.md).
        "allowlists": {"default": {"instance_types": ["g5.xlarge"]}},
        "warm_pools": [
            {"name": "default", "desired_count": 2, "instance_type": "m5.large", "image_id": LOCAL_AMI}
        ],
        "agent": {
            "endpoint": f"static:{agent_endpoint}",
            "call_timeout_seconds": 5,
            "boot_timeout_seconds": 120,
        },
        "health": {"interval_seconds": 5},
        "celery": {"visibility_timeout_seconds": 60, "max_countdown_seconds": 2},
        "node": {"name": "vkec2-local"},
        "flower": {"local": True},
        "beat": {"warm_pools_interval_seconds": 5},
        # A fresh Fernet key for this run: pods' ConfigMap/Secret content is sealed in Redis.
        "secrets": {"keys": [base64.urlsafe_b64encode(os.urandom(32)).decode()], "refresh_seconds": 5},
    }


@dataclass
class Snapshot:
    """What the progress view shows at one moment."""

    phases: Counter[str]
    pods: list[tuple[str, str, str, str]]  # name, phase, instance, reason
    instances: Counter[str]
    pools: dict[str, tuple[int, int]]  # pool -> (ready, members)


class Observer:
    """Reads the fleet's state for the progress view (Redis records, EC2 via moto directly)."""

    def __init__(self, settings_raw: dict[str, Any], store: Store, moto_url: str) -> None:
        self.raw = settings_raw
        self.store = store
        self.ec2 = boto3.client(
            "ec2",
            endpoint_url=moto_url,
            region_name="us-west-2",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    def instances(self) -> list[dict[str, Any]]:
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": f"tag:{TAG_CLUSTER}", "Values": [self.raw["cluster_name"]]}]
        )
        return [dict(i) for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def snapshot(self) -> Snapshot:
        records = self.store.records()
        pools = {}
        for pool in self.raw["warm_pools"]:
            name = pool["name"]
            pools[name] = self.store.pool_sizes(name)
        return Snapshot(
            phases=Counter(r.phase.value for r in records),
            pods=sorted((f"{r.namespace}/{r.name}", r.phase.value, r.instance_id, r.reason) for r in records),
            instances=Counter(i["State"]["Name"] for i in self.instances()),
            pools=pools,
        )


def _view(snap: Snapshot, title: str) -> Table:
    table = Table(title=title, expand=False)
    for column in ("pod", "phase", "instance", "reason"):
        table.add_column(column)
    for row in snap.pods:
        table.add_row(*row)
    pools = ", ".join(f"{n}: {ready} ready of {members}" for n, (ready, members) in snap.pools.items())
    table.caption = f"instances: {dict(snap.instances) or '{}'}   warm pool: {pools or '-'}"
    return table


def _line(snap: Snapshot) -> str:
    return (
        f"pods {dict(sorted(snap.phases.items()))}  instances {dict(sorted(snap.instances.items()))}  "
        f"warm pool {', '.join(f'{n} {r}/{m} ready' for n, (r, m) in snap.pools.items())}"
    )


def _watch(
    console: Console,
    observer: Observer,
    title: str,
    done: Callable[[Snapshot], bool],
    timeout: float,
    fleet: LocalFleet,
) -> Snapshot:
    """Show progress until ``done`` holds; raise UpError on timeout or a dead process."""
    deadline = time.monotonic() + timeout
    snap = observer.snapshot()
    last = ""

    def check(s: Snapshot) -> bool:
        for proc in fleet.procs:
            if not proc.alive():
                raise UpError(
                    f"{proc.name} died; its log ({proc.log_path}) ends with:\n{proc.output()[-2000:]}"
                )
        return done(s)

    if console.is_terminal:
        with Live(_view(snap, title), console=console, refresh_per_second=4) as live:
            while not check(snap):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
                snap = observer.snapshot()
                live.update(_view(snap, title))
    else:
        while not check(snap):
            line = _line(snap)
            if line != last:
                console.print(f"  {line}")
                last = line
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
            snap = observer.snapshot()
        console.print(_view(snap, title))
    if not done(snap):
        raise UpError(f"{title}: not reached within {timeout:.0f}s; logs in {fleet.workdir / 'logs'}")
    return snap


def _pod_names(manifest: Path) -> set[str]:
    """The names of the Pods in ``manifest`` (ConfigMaps and Secrets beside them are not pods)."""
    docs = yaml.safe_load_all(manifest.read_text())
    return {str(doc["metadata"]["name"]) for doc in docs if doc and doc.get("kind", "Pod") == "Pod"}


def bundled_manifests() -> Traversable:
    """The example pods' directory inside the installed package."""
    return files("vkec2").joinpath(*BUNDLED_MANIFESTS)


def check_local_extra() -> None:
    """Raise :class:`UpError` naming the install command when moto's server is not installed."""
    missing = [name for name in LOCAL_EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise UpError(
            "the local fleet runs moto's EC2 server, which is not installed "
            f"(missing: {', '.join(missing)}); install it with: pip install 'vkec2[local]'"
        )


def _copy_manifests(source: Traversable, dest: Path) -> None:
    """Copy the ``*.yaml`` files of ``source`` (a directory or a package resource) into ``dest``."""
    manifests = [] if not source.is_dir() else [f for f in source.iterdir() if f.name.endswith(".yaml")]
    if not manifests:
        raise UpError(f"no pod manifests (*.yaml) in {source}")
    dest.mkdir(parents=True)
    for manifest in manifests:
        (dest / manifest.name).write_bytes(manifest.read_bytes())


def run(args: UpOptions, console: Console) -> int:
    started = time.monotonic()
    check_local_extra()
    source: Traversable = Path(args.manifests) if args.manifests is not None else bundled_manifests()
    workdir = Path(tempfile.mkdtemp(prefix="vkec2-up-"))
    pods_dir = workdir / "pods"
    try:
        _copy_manifests(source, pods_dir)
    except UpError:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    (workdir / "logs").mkdir()
    fleet = LocalFleet(workdir, console)
    keep = False
    # Every child talks to moto only: dummy credentials, never real ones.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[key] = "local"
    os.environ["AWS_DEFAULT_REGION"] = "us-west-2"
    os.environ.pop("AWS_PROFILE", None)
    try:
        console.print(f"[bold]Starting a local vkec2 fleet[/bold] (work directory {workdir})")
        redis_url = _choose_redis(fleet, args.redis_url)
        logs = str(workdir / "logs")
        moto_url = fleet.service("moto EC2 server", lambda: start_moto(log_dir=logs))
        agent_endpoint = fleet.service(
            "agent simulator",
            lambda: start_agent_sim(
                moto_url,
                boot_delay=2,
                log_dir=logs,
                # The example pods really run, as processes of this machine under the work directory.
                extra_args=["--runtime", "process", "--log-dir", str(workdir / "agents")],
            ),
        )
        py = sys.executable
        cluster = f"local-{uuid.uuid4().hex[:6]}"
        raw = _config(cluster, redis_url, moto_url, agent_endpoint)
        config_path = workdir / "vkec2.yaml"
        config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
        env_note = f"VKEC2_CONFIG={config_path}"
        os.environ["VKEC2_CONFIG"] = str(config_path)
        fleet.start(
            "celery worker",
            worker_argv(f"{cluster}@localhost", concurrency=8),
            lambda: "ready." in fleet.procs[-1].output(),
        )
        fleet.start(
            "celery beat",
            [py, "-m", "celery", "-A", "tasks", "beat", "-l", "INFO", "-s", str(workdir / "beat-schedule")],
            lambda: True,
            timeout=5,
        )
        flower_port, kubelet_port = free_port(), free_port()
        if not args.no_flower:
            fleet.start(
                "flower",
                [py, "-m", "celery", "-A", "tasks", "flower", "--address=127.0.0.1", f"--port={flower_port}"],
                lambda: port_open(flower_port),
                timeout=60,
            )
            fleet.urls["flower"] = f"http://127.0.0.1:{flower_port}"
        fleet.start(
            "producer (standalone)",
            [
                py,
                "-m",
                "vkec2.cli",
                "producer",
                "--config",
                str(config_path),
                "--manifests",
                str(pods_dir),
                "--kubelet-port",
                str(kubelet_port),
            ],
            lambda: port_open(kubelet_port),
            timeout=30,
        )
        fleet.urls["kubelet"] = f"https://127.0.0.1:{kubelet_port}"

        store = Store.from_url(redis_url, cluster)
        observer = Observer(raw, store, moto_url)
        expected = set().union(*(_pod_names(p) for p in pods_dir.glob("*.yaml")))
        console.print(f"\n[bold]Running {len(expected)} example pods[/bold] from {source}")

        def all_running(s: Snapshot) -> bool:
            running = {name.split("/", 1)[1] for name, phase, _, _ in s.pods if phase == Phase.RUNNING.value}
            return expected <= running

        _watch(console, observer, "example pods", all_running, args.timeout, fleet)
        console.print("[green]All example pods are Running.[/green]")
        settings = Settings.model_validate(raw)
        if not show_workloads(console, store, settings, {n.rsplit("/", 1)[-1] for n in expected}, 60):
            raise UpError("not every example pod turned Ready within 60 s (its readiness probe failed?)")
        console.print("[green]All example pods are Ready.[/green]")

        if args.keep:
            keep = True
            _print_keep(console, fleet, env_note)
            return 0

        removed = pods_dir / REMOVED_MANIFEST
        gone_names = _pod_names(removed) if removed.exists() else set()
        if gone_names:
            gone_ids = {
                i["InstanceId"]
                for i in observer.instances()
                if tag_map(i).get(TAG_POD_NAME) in gone_names and i["State"]["Name"] == "running"
            }
            console.print(
                f"\n[bold]Removing {REMOVED_MANIFEST}[/bold]: pod(s) {', '.join(sorted(gone_names))}, "
                f"instance(s) {', '.join(sorted(gone_ids))}"
            )
            removed.unlink()

            def terminated(s: Snapshot) -> bool:
                left = [
                    p
                    for p in s.pods
                    if p[0].split("/", 1)[1] in gone_names and p[1] != Phase.TERMINATED.value
                ]
                states = {
                    i["InstanceId"]: i["State"]["Name"]
                    for i in observer.instances()
                    if i["InstanceId"] in gone_ids
                }
                return not left and all(st in ("shutting-down", "terminated") for st in states.values())

            _watch(console, observer, f"after removing {REMOVED_MANIFEST}", terminated, 120, fleet)
            console.print(f"[green]{', '.join(sorted(gone_names))} terminated; instance(s) gone.[/green]")

        calls = store.ec2_calls()
        snap = observer.snapshot()
        summary = {
            "pods": dict(sorted(snap.phases.items())),
            "instances": dict(sorted(snap.instances.items())),
            "ec2_calls": sum(calls.values()),
            "ec2_calls_by_action": dict(sorted(calls.items())),
            "elapsed_seconds": round(time.monotonic() - started, 1),
        }
        console.print("\n[bold]Summary[/bold]")
        console.print(json.dumps(summary, indent=2))
        store.close()
        return 0
    finally:
        if not keep:
            console.print("\nStopping the local fleet ...")
            fleet.stop()
            console.print(f"Stopped. Logs kept in {workdir / 'logs'}")


def _print_keep(console: Console, fleet: LocalFleet, env_note: str) -> None:
    console.print("\n[bold]The fleet keeps running.[/bold]")
    if "flower" in fleet.urls:
        console.print(f"  Flower:   {fleet.urls['flower']}")
    console.print(f"  CLI:      {env_note} vkec2 status   (also: vkec2 pods, vkec2 instances)")
    console.print(f'  Replay:   {env_note} celery -A tasks call {POD_CREATE} --kwargs \'{{"uid": "..."}}\'')
    console.print(f"  Kubelet:  {fleet.urls['kubelet']}/containerLogs/NAMESPACE/POD/CONTAINER  (TLS)")
    console.print(f"  Logs:     {fleet.workdir / 'logs'}")
    load = f"bench launch --count 200 --template examples/bench/pod.yaml --manifests {fleet.workdir / 'pods'}"
    console.print(f"  Load:     {env_note} vkec2 {load}")
    console.print(f"  Stop:     kill -TERM -- {' '.join(f'-{p.pid}' for p in fleet.procs)}")


@click.command("up", cls=Command, short_help="run a local fleet on loopback with the example pods (the demo)")
@click.option(
    "--manifests",
    default=None,
    help="directory of pod manifests  [default: the example pods shipped with vkec2]",
)
@click.option("--redis-url", help="use this Redis instead of starting redis-server")
@click.option("--keep", is_flag=True, help="leave the fleet running at the end")
@click.option("--no-flower", is_flag=True, help="do not start Flower")
@click.option("--timeout", type=float, default=240.0, show_default=True, help="seconds to wait for the pods")
def up(manifests: str | None, redis_url: str | None, keep: bool, no_flower: bool, timeout: float) -> None:
    """The whole fleet on one machine, on loopback, showing the example pods run and go."""
    console = Console()
    try:
        code = run(UpOptions(manifests, redis_url, keep, no_flower, timeout), console)
    except UpError as exc:
        console.print(f"[red]vkec2 up: {exc}[/red]")
        code = 1
    except KeyboardInterrupt:
        console.print("[yellow]vkec2 up: interrupted[/yellow]")
        code = 130
    exit_with(code)
