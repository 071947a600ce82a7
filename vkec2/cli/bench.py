"""``vkec2 bench launch|delete``: the load generator, N pods from a template and back, with the figures.

``launch`` renders ``--count`` pods from ``--template`` (:mod:`vkec2.cli.benchload`: Jinja2 with the
variables ``i``, ``n``, ``name``, ``run_id``, ``namespace``, ``node``), labels each with
``vkec2.io/bench-run=<run ID>`` and makes them at ``--rate`` pods per second (a token bucket with
``--burst``; unlimited by default) — as manifest files in a standalone producer's directory
(``--manifests DIR``), or through the Kubernetes API (``--kubeconfig``/``--context``, default the
usual kubeconfig) — :mod:`vkec2.cli.benchtargets`. With ``--wait`` (the default) it follows them
until all are Running, with a progress bar (created, Running), then prints a summary: pods,
create rate achieved, time to all Running, p50/p90/p99/max created→Running, failures by reason
(``-o json`` for scripts). In standalone mode the status is read from the fleet's Redis, so the
fleet's configuration is needed (``--config``, or ``VKEC2_CONFIG`` as ``vkec2 up --keep`` prints).
``delete`` removes exactly the pods of ``--run-id`` (or of every run, ``--all``) and with ``--wait``
follows them until gone, with the same kind of summary. A bad template (undefined variable,
invalid YAML, not a Pod, duplicate names) is refused before anything is made, exit status 2; a
failed API call or file write stops the run, says what was made and how to remove it, exit 1;
pods not at their goal by ``--timeout`` (or Failed) exit 1 after the summary.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from vkec2.cli.benchload import RUN_ID, Pacer, PodTemplate, RenderOptions, Summary, Tally, TemplateError
from vkec2.cli.benchtargets import GONE, RUNNING, ApiTarget, Made, ManifestTarget, selector
from vkec2.cli.common import Failed, Group

#: How many API calls run at once (the kubernetes client's connection pool holds more).
API_CONCURRENCY = 8
#: How often the progress is redrawn and a standalone fleet's records are read (at most: a poll that
#: takes longer is followed by four times its length of rest).
POLL_SECONDS = 0.25


class Target(Protocol):
    state: dict[str, str]

    def poll(self, tally: Tally, clock: Callable[[], float] = ...) -> None: ...

    def close(self) -> None: ...


def _run_id(value: str | None) -> str:
    if value is None:
        return secrets.token_hex(3)
    if not RUN_ID.match(value):
        raise click.BadParameter(
            f"{value!r}: lower-case letters, digits and '-', at most 40, starting and ending alphanumeric",
            param_hint="--run-id",
        )
    return value


def _drive(
    items: list[Made],
    act: Callable[[Made], None],
    target: Target,
    tally: Tally,
    pacer: Pacer,
    *,
    concurrency: int,
    wait: bool,
    timeout: float,
    labels: tuple[str, str],
    console: Console,
) -> tuple[str, Exception] | None:
    """Do ``act`` on every item at the pacer's rate, then (``wait``) follow until all reach the goal,
    for at most ``timeout`` seconds after the last call.

    Returns the first failed call (key, error), which stops the dispatch; None when all were done.
    """
    stop = threading.Event()
    failure: list[tuple[str, Exception]] = []
    futures: list[Future[None]] = []
    tally.begun = time.monotonic()

    def one(item: Made) -> None:
        if stop.is_set():
            return
        begun = time.monotonic()
        try:
            act(item)
        except Exception as exc:  # KubeError, OSError: reported with what was made
            failure.append((item.key, exc))
            stop.set()
            return
        tally.call(begun, time.monotonic())
        tally.start(item.key, begun)

    def dispatch(pool: ThreadPoolExecutor) -> None:
        for item in items:
            if stop.wait(pacer.reserve()) or stop.is_set():
                return
            futures.append(pool.submit(one, item))

    deadline: float | None = None  # the timeout counts from the last call's answer
    progress = Progress(
        TextColumn("{task.description:>9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    with progress, ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="bench") as pool:
        made = progress.add_task(labels[0], total=len(items))
        goal = progress.add_task(labels[1], total=len(items), visible=wait)
        dispatcher = threading.Thread(target=dispatch, args=(pool,), daemon=True)
        dispatcher.start()
        try:
            while True:
                polled = time.monotonic()
                target.poll(tally)
                polled = time.monotonic() - polled
                progress.update(made, completed=len(tally.started))
                progress.update(goal, completed=len(tally.reached))
                dispatched = not dispatcher.is_alive() and all(f.done() for f in futures)
                if dispatched and (failure or not wait):
                    break
                settled = len(tally.reached) + len(tally.failed) >= len(tally.started) >= len(items)
                if dispatched and settled:
                    break
                if dispatched and deadline is None:
                    deadline = time.monotonic() + timeout
                if deadline is not None and time.monotonic() > deadline:
                    break
                # A large run's poll (every record read) takes at most a fifth of a core, not the fleet's.
                time.sleep(max(POLL_SECONDS, 4 * polled))
        except KeyboardInterrupt:
            failure.append(("interrupted", RuntimeError("stopped by Ctrl-C")))
        finally:
            stop.set()
            dispatcher.join()
        progress.update(made, completed=len(tally.started))
        progress.update(goal, completed=len(tally.reached))
    return failure[0] if failure else None


def _pending(target: Target, tally: Tally) -> dict[str, str]:
    return {
        k: target.state.get(k, "no news")
        for k in tally.started
        if k not in tally.reached and k not in tally.failed
    }


def _show(summary: Summary, what: str, output: str, run_id: str, wait: bool) -> None:
    if output == "json":
        click.echo(json.dumps({"run_id": run_id, **summary.to_dict()}, indent=2))
        return

    def secs(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"

    table = Table(title=f"vkec2 bench {what}, run {run_id}", show_header=False)
    table.add_column("figure")
    table.add_column("value")
    verb = "created" if summary.goal == RUNNING else "deleted"
    table.add_row("pods", str(summary.count))
    table.add_row(verb, str(summary.started))
    table.add_row(f"{verb} per second", "-" if summary.rate is None else f"{summary.rate:.1f}")
    if wait:
        table.add_row(summary.goal, str(summary.reached))
        table.add_row(f"time to all {summary.goal}", secs(summary.time_to_all))
        figures = (("p50", summary.p50), ("p90", summary.p90), ("p99", summary.p99), ("max", summary.slowest))
        for name, value in figures:
            table.add_row(f"{name} {verb}→{summary.goal}", secs(value))
    failures = ", ".join(f"{reason}: {n}" for reason, n in summary.failures.items())
    table.add_row("failures", failures or "none")
    Console().print(table)


def _finish(
    failure: tuple[str, Exception] | None, summary: Summary, wait: bool, what: str, undo: str
) -> None:
    """Exit 1 with a clear message when a call failed or pods missed their goal."""
    if failure is not None:
        key, exc = failure
        raise Failed(f"vkec2 bench {what}: {key}: {exc}; {summary.started} of {summary.count} done. {undo}")
    if wait and (summary.reached < summary.count or summary.failures):
        raise Failed(
            f"vkec2 bench {what}: {summary.count - summary.reached} of {summary.count} pods not "
            f"{summary.goal} ({', '.join(f'{r}: {n}' for r, n in summary.failures.items())}). {undo}"
        )


def _api_target(
    kubeconfig: str | None, context: str | None, kube_host: str | None, sel: str, grace: int | None
) -> ApiTarget:
    from producer.kube import Kube, KubeTarget, build_api_client

    try:
        api = build_api_client(KubeTarget(kubeconfig=kubeconfig, context=context, host=kube_host))
    except Exception as exc:  # kubernetes.config.ConfigException, a missing default kubeconfig
        raise Failed(f"vkec2 bench: cannot load the kubeconfig: {exc}") from exc
    return ApiTarget(Kube(api), sel, grace)


def _manifest_target(directory: str, config: str | None, wait: bool) -> ManifestTarget:
    import os

    from vkec2.config import load_settings
    from vkec2.errors import ConfigError
    from vkec2.store.redis_store import Store

    store = None
    if wait:
        if not (config or os.environ.get("VKEC2_CONFIG")):
            raise click.UsageError(
                "--wait with --manifests reads the pods' status from the fleet's Redis: pass --config FILE "
                "(or set VKEC2_CONFIG; vkec2 up --keep prints it), or --no-wait"
            )
        try:
            store = Store.from_settings(load_settings(config))
        except ConfigError as exc:
            raise click.UsageError(f"configuration: {exc}") from exc
    return ManifestTarget(Path(directory), store)


def _where(manifests: str | None, kubeconfig: str | None, context: str | None) -> str:
    if manifests is not None:
        return f" --manifests {manifests}"
    return "".join(
        f" {flag} {value}" for flag, value in (("--kubeconfig", kubeconfig), ("--context", context)) if value
    )


def _target_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--manifests",
            metavar="DIR",
            type=click.Path(exists=True, file_okay=False, writable=True),
            help="a standalone producer's manifest directory (e.g. vkec2 up's pods directory)",
        ),
        click.option(
            "--kubeconfig",
            metavar="PATH",
            type=click.Path(exists=True, dir_okay=False),
            help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)",
        ),
        click.option("--context", "kube_context", help="kubeconfig context to use"),
        click.option("--kube-host", metavar="URL", hidden=True, help="plain-HTTP API server URL (tests)"),
        click.option(
            "--config",
            metavar="FILE",
            help="the fleet's configuration, for --manifests --wait (default: $VKEC2_CONFIG)",
        ),
        click.option(
            "--rate",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="calls per second  [default: unlimited]",
        ),
        click.option(
            "--burst",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="calls the rate may save up",
        ),
        click.option("--wait/--no-wait", default=True, show_default=True, help="follow the pods to the goal"),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=600.0,
            show_default=True,
            help="seconds to wait for the goal after the last call",
        ),
        click.option(
            "-o",
            "--output",
            type=click.Choice(["table", "json"]),
            default="table",
            show_default=True,
            help="summary format",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _check_mode(manifests: str | None, kubeconfig: str | None, context: str | None, host: str | None) -> None:
    if manifests is not None and (kubeconfig or context or host):
        raise click.UsageError(
            "--manifests (standalone) and --kubeconfig/--context (the API) exclude each other"
        )


@click.group("bench", cls=Group)
def bench() -> None:
    """make N pods from a template and remove them, with figures (the load generator)"""


@bench.command("launch")
@click.option("--count", type=click.IntRange(min=1), required=True, help="how many pods")
@click.option(
    "--template",
    metavar="FILE",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="a Jinja2 pod template (variables: i, n, name, run_id, namespace, node)",
)
@click.option("--namespace", help="the pods' namespace  [default: the template's, else default]")
@click.option("--node", help="bind the pods to this node (spec.nodeName)")
@click.option("--run-id", help="the run's ID (the vkec2.io/bench-run label)  [default: random]")
@click.option("--prefix", default="bench", show_default=True, help="pod names are PREFIX-RUN_ID-I")
@_target_options
def launch(
    count: int,
    template: str,
    namespace: str | None,
    node: str | None,
    run_id: str | None,
    prefix: str,
    manifests: str | None,
    kubeconfig: str | None,
    kube_context: str | None,
    kube_host: str | None,
    config: str | None,
    rate: float | None,
    burst: int,
    wait: bool,
    timeout: float,
    output: str,
) -> None:
    """Make COUNT pods from a template (as manifests, or through the API) and follow them to Running."""
    _check_mode(manifests, kubeconfig, kube_context, kube_host)
    run = _run_id(run_id)
    try:
        pods = PodTemplate.load(Path(template)).render_all(RenderOptions(run, count, namespace, node, prefix))
    except TemplateError as exc:
        raise click.UsageError(str(exc)) from exc
    console = Console(stderr=True)
    where = _where(manifests, kubeconfig, kube_context)
    undo = f"Remove what was made with: vkec2 bench delete --run-id {run}{where}"
    target: ManifestTarget | ApiTarget
    tally = Tally(RUNNING)
    if manifests is not None:
        target = _manifest_target(manifests, config, wait)
        try:
            items = target.prepare(pods, run)
        except TemplateError as exc:
            target.close()
            raise click.UsageError(str(exc)) from exc
        act: Callable[[Made], None] = target.create
        concurrency = 1
    else:
        target = _api_target(kubeconfig, kube_context, kube_host, selector(run), None)
        items = [Made(f"{p['metadata']['namespace']}/{p['metadata']['name']}", "", p) for p in pods]
        act, concurrency = target.create, API_CONCURRENCY
        if wait:
            try:
                _, rv = target.list(None)
            except Exception as exc:
                target.close()
                raise Failed(f"vkec2 bench launch: cannot list pods: {exc}") from exc
            target.follow(tally, rv)
    console.print(f"vkec2 bench launch: run {run}, {count} pods from {template}")
    try:
        failure = _drive(
            items,
            act,
            target,
            tally,
            Pacer(rate, burst),
            concurrency=concurrency,
            wait=wait,
            timeout=timeout,
            labels=("created", RUNNING),
            console=console,
        )
        summary = tally.summary(count, _pending(target, tally) if wait else None)
    finally:
        target.close()
    _show(summary, "launch", output, run, wait)
    _finish(failure, summary, wait, "launch", undo)


@bench.command("delete")
@click.option("--run-id", help="remove the pods of this run")
@click.option("--all", "every", is_flag=True, help="remove the pods of every bench run")
@click.option("--namespace", help="only in this namespace (API)  [default: every namespace]")
@click.option(
    "--grace-period", type=click.IntRange(min=0), default=None, help="seconds (API)  [default: the pods' own]"
)
@_target_options
def delete(
    run_id: str | None,
    every: bool,
    namespace: str | None,
    grace_period: int | None,
    manifests: str | None,
    kubeconfig: str | None,
    kube_context: str | None,
    kube_host: str | None,
    config: str | None,
    rate: float | None,
    burst: int,
    wait: bool,
    timeout: float,
    output: str,
) -> None:
    """Remove the pods of a run (or of every run) and follow them until gone."""
    _check_mode(manifests, kubeconfig, kube_context, kube_host)
    if (run_id is None) == (not every):
        raise click.UsageError("name the run to delete with --run-id ID, or pass --all (not both)")
    run = None if every else _run_id(run_id)
    label = run or "all"
    console = Console(stderr=True)
    tally = Tally(GONE)
    target: ManifestTarget | ApiTarget
    if manifests is not None:
        target = _manifest_target(manifests, config, wait)
        items = target.find(run)
        act: Callable[[Made], None] = target.remove
        concurrency = 1
    else:
        target = _api_target(kubeconfig, kube_context, kube_host, selector(run), grace_period)
        try:
            items, rv = target.list(namespace)
        except Exception as exc:
            target.close()
            raise Failed(f"vkec2 bench delete: cannot list pods: {exc}") from exc
        if wait:
            target.follow(tally, rv)
        act, concurrency = target.remove, API_CONCURRENCY
    console.print(f"vkec2 bench delete: run {label}, {len(items)} pods")
    try:
        failure = _drive(
            items,
            act,
            target,
            tally,
            Pacer(rate, burst),
            concurrency=concurrency,
            wait=wait,
            timeout=timeout,
            labels=("deleted", "gone"),
            console=console,
        )
        summary = tally.summary(len(items), _pending(target, tally) if wait else None)
    finally:
        target.close()
    _show(summary, "delete", output, label, wait)
    which = "--all" if run is None else f"--run-id {run}"
    again = f"vkec2 bench delete {which}{_where(manifests, kubeconfig, kube_context)}"
    _finish(failure, summary, wait, "delete", f"Try again with: {again}")
