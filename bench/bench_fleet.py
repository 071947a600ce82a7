"""Benchmark: the fleet as users run it, side by side with the limit of this machine and of AWS's buckets.

Starts its own Redis, moto, the agent simulator and the AWS-like EC2 double on free loopback ports
(stopped by PID at the end), then runs the scenarios of ``bench/fleetscenarios.py``: ``limit`` (a
serial baseline of the minimal calls per pod, and the bucket refill), ``throughput`` (cold and warm
create→Running and delete→gone of 100 and 1,000 pods, unthrottled and under AWS's buckets),
``calls`` (EC2 requests per pod counted at the endpoint), ``scaling`` (1, 2 and 4 worker processes)
and ``headline`` (1,000 pods under both buckets with worker SIGKILLs: duplicates, leaks, batching
off). Each writes ``bench/results/fleet_<scenario>.json``; plots go to docs/img/. Figures, never
pass/fail; a scenario that times out records what it reached. ``--quick``: 100 pods only, setting
(a) only, 1 and 4 workers, the headline without its batching-off run (under 5 minutes with the
rest). Run: ``PYTHONPATH=. python bench/bench_fleet.py [--quick] [--only NAME] [--pods N ...]``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from typing import TYPE_CHECKING

from bench.common import Figure, Result, write_result

if TYPE_CHECKING:
    from bench.fleetrun import Servers
    from bench.fleetscenarios import Options

#: The scenarios in run order (``bench/fleetscenarios.py`` SCENARIOS; imported after parsing, so
#: ``--help`` and usage errors answer without loading Celery, boto3 and matplotlib).
NAMES = ("limit", "throughput", "calls", "scaling", "headline")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="100 pods only, short caps (make bench-quick)")
    parser.add_argument(
        "--only",
        action="append",
        choices=NAMES,
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(NAMES)}",
    )
    parser.add_argument("--pods", type=int, nargs="+", help="pod counts of the throughput runs (100 1000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the throughput runs")
    parser.add_argument("--timeout", type=float, help="longest wait of one create or delete run, seconds")
    args = parser.parse_args(argv)
    if args.pods and any(n < 1 for n in args.pods):
        parser.error("--pods: counts must be at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from bench.fleetrun import Servers
    from bench.fleetscenarios import SCENARIOS, Options

    assert tuple(SCENARIOS) == NAMES, "bench_fleet.NAMES and fleetscenarios.SCENARIOS differ"
    opts = Options(
        quick=args.quick,
        pods=args.pods or ([100] if args.quick else [100, 1000]),
        workers=args.workers,
        timeout=args.timeout or (120.0 if args.quick else 600.0),
    )
    names = [name for name in NAMES if name in (args.only or NAMES)]
    # A SIGTERM (timeout, Ctrl-C in make) unwinds through ``finally``: every server is stopped by PID.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    # Fresh servers per scenario, and per run within one (fleetscenarios.fresh_servers): moto lists
    # every instance it ever launched, and a moto holding the previous runs' thousands answers slowly
    # enough to be the bottleneck itself. Quick mode's few hundred do not: its scenarios share one set
    # (each fleet has its own Redis database).
    shared = Servers().start() if args.quick else None
    try:
        for name in names:
            run_scenario(name, shared, opts, args.quick)
    finally:
        if shared is not None:
            shared.stop()
    return 0


def run_scenario(name: str, shared: Servers | None, opts: Options, quick: bool) -> None:
    """Run scenario ``name`` on ``shared`` servers or fresh ones; write its result and plots."""
    from bench.fleetrun import Servers
    from bench.fleetscenarios import SCENARIOS

    started = time.monotonic()
    print(f"-- fleet: {name}", flush=True)
    servers = shared or Servers()
    try:
        if shared is None:
            servers.start()
        title, figures, desc = SCENARIOS[name](servers, opts)
    except Exception as exc:  # one broken scenario does not lose the others
        traceback.print_exc()
        title, figures, desc = f"Fleet: {name}", [], f"The scenario failed: {exc!r}"
    finally:
        if shared is None:
            servers.stop()
    command = f"PYTHONPATH=. python bench/bench_fleet.py --only {name}" + (" --quick" if quick else "")
    result = Result(
        name=f"fleet_{name}",
        title=title,
        command=command,
        description=desc,
        figures=figures,
        quick=quick,
        seconds=round(time.monotonic() - started, 1),
    )
    result.plots = draw(name, figures)
    write_result(result)


def draw(name: str, figures: list[Figure]) -> list[str]:
    """The plots of scenario ``name`` from its figures and the per-pod samples."""
    from bench import plots
    from bench.fleetscenarios import SAMPLES

    out: list[str | None] = []
    if name == "throughput":
        out.append(plots.latency_cdf(SAMPLES))
    if name == "scaling":
        rates = [f for f in figures if f.figure.endswith("create throughput")]
        limits = [f.value for f in figures if f.figure.endswith(": limit")]
        workers = [int(f.figure.split(" ")[0]) for f in rates]
        out.append(plots.scaling(workers, [f.value for f in rates], limits))
    return [p for p in out if p]


if __name__ == "__main__":
    sys.exit(main())
