"""``python -m tests.chaos [--reduced] [--seed N] [--only NAME ...] [--list]``: a chaos pass and its table.

Exits 0 when every scenario kept every invariant, 1 on any violation or error, 2 on bad arguments.
The table is also written as Markdown to ``--out`` (default ``docs/chaos-results.md``; ``-`` for
none) so docs can quote it. SIGTERM stops the pass like Ctrl-C: every process it started is
stopped by its PID and its temporary directory removed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from tests.chaos.report import markdown, print_report
from tests.chaos.scenarios import BY_NAME, FULL, REDUCED, SCENARIOS
from tests.chaos.suite import run_suite, select


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--reduced", action="store_true", help="the short pass CI runs")
    parser.add_argument("--seed", type=int, default=1, help="seeds the double and every random choice")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        choices=sorted(BY_NAME),
        help="run only this scenario (repeatable)",
    )
    parser.add_argument("--out", default="docs/chaos-results.md", help="Markdown table ('-': none)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary directory of logs")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    opts = parser.parse_args(argv)
    if opts.list:
        for s in SCENARIOS:
            print(f"{s.name:18} {s.what}")
        return 0
    select(opts.only)
    signal.signal(signal.SIGTERM, _interrupt)
    size = REDUCED if opts.reduced else FULL
    started = time.monotonic()
    results = run_suite(size, seed=opts.seed, only=opts.only, keep=opts.keep_logs)
    took = time.monotonic() - started
    title = (
        f"{'reduced' if opts.reduced else 'full'} pass, seed {opts.seed}, "
        f"{sum(r.pods for r in results)} pods, {took:.0f} s"
    )
    print_report(results, title)
    if opts.out != "-":
        Path(opts.out).write_text(markdown(results, title))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
