"""Renders docs/benchmarks.md from every result file under bench/results/ and the notes under bench/notes/.

A header (the machine, the date, the commands ``make bench`` and ``make bench-quick``), a table of
every figure that has a goal with ``bench/notes/overview.md`` under it, then one section per
result (``bench/common.py`` :func:`~bench.common.read_results`): its description, the command that
reruns it, a table figure | value | goal | ratio | met ("missed by X %" when a goal was missed) and
its plots; ``bench/notes/<name>.md`` (hand-written analysis) follows the section of the result
``<name>`` when it exists, and notes naming no result come at the end. Results of benches not rerun
stay as they were, so ``--only`` reruns never drop a section. Run:
``PYTHONPATH=. python bench/report.py [--out FILE]``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import Figure, Result, machine, read_results

ROOT = Path(__file__).resolve().parent.parent
NOTES_DIR = Path(__file__).resolve().parent / "notes"
OUT = ROOT / "docs" / "benchmarks.md"
#: Sections first in this order (the fleet's headline first); other results follow by name.
#: The note shown under the goals table, before every section (the measured bottlenecks).
OVERVIEW = "overview"
ORDER = ("fleet_headline", "fleet_limit", "fleet_throughput", "fleet_scaling", "fleet_calls")

_GOAL = re.compile(r"^\s*(<=|>=|<|>|=)?\s*([0-9][0-9,]*\.?[0-9]*)")


def value_text(value: float, unit: str) -> str:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return "n/a" if math.isnan(value) else "∞"
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def verdict(fig: Figure) -> str:
    """ "met", "missed by X %" (from the goal's number, or the ratio for a goal on the limit), or ""."""
    if fig.met is None:
        return ""
    if fig.met:
        return "met"
    match = _GOAL.match(fig.goal)
    if match is None:
        return "missed"
    op, target = match.group(1) or "=", float(match.group(2).replace(",", ""))
    value = fig.ratio if "limit" in fig.goal and fig.ratio is not None else fig.value
    if target == 0 or math.isnan(value) or math.isinf(value):
        return "missed"
    by = (value - target) / target if op in ("<=", "<", "=") else (target - value) / target
    return f"missed by {abs(by) * 100:.0f} %"


def table(figures: Sequence[Figure]) -> list[str]:
    lines = ["| figure | value | goal | ratio | met |", "|---|---|---|---|---|"]
    for fig in figures:
        value = value_text(fig.value, fig.unit) + (f" ({fig.note})" if fig.note else "")
        ratio = f"{fig.ratio:.2f}" if fig.ratio is not None else ""
        cells = [fig.figure, value, fig.goal, ratio, verdict(fig)]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return lines


def ordered(results: Sequence[Result]) -> list[Result]:
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(results, key=lambda r: (rank.get(r.name, len(ORDER)), r.name))


def note(name: str, notes_dir: Path) -> str | None:
    path = notes_dir / f"{name}.md"
    return path.read_text().strip() if path.is_file() else None


def section(result: Result, notes_dir: Path) -> list[str]:
    mode = " (quick mode)" if result.quick else ""
    lines = [
        f"## {result.title}",
        "",
        result.description.strip(),
        "",
        f"Run `{result.command}`. Measured {result.measured_at}{mode} in {result.seconds:.0f} s on "
        f"{result.machine}.",
        "",
    ]
    if result.figures:
        lines += [*table(result.figures), ""]
    else:
        lines += ["No figures were recorded (see the description).", ""]
    lines += [f"![{result.title}]({plot})" for plot in result.plots]
    if result.plots:
        lines.append("")
    written = note(result.name, notes_dir)
    if written:
        lines += [written, ""]
    return lines


def goals(results: Sequence[Result], notes_dir: Path) -> list[str]:
    """Every figure that has a goal, one table, met or by how much missed, then the overview note
    (``bench/notes/overview.md``: the measured bottlenecks)."""
    lines = [
        "## Goals at a glance",
        "",
        "| section | figure | value | goal | met |",
        "|---|---|---|---|---|",
    ]
    for result in ordered(results):
        title = result.title + (" (quick)" if result.quick else "")
        for fig in result.figures:
            if fig.met is None:
                continue
            shown = value_text(fig.value, fig.unit)
            if fig.ratio is not None and "limit" in fig.goal:
                shown += f" (ratio {fig.ratio:.2f})"
            cells = [title, fig.figure, shown, fig.goal, verdict(fig)]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    overview = note(OVERVIEW, notes_dir)
    return lines + ([overview, ""] if overview else [])


def render(results: Sequence[Result], notes_dir: Path = NOTES_DIR) -> str:
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by bench/report.py from bench/results/*.json and bench/notes/*.md: edit those. -->",
        "",
        "`make bench` runs every `bench/bench_*.py` (each starts its own Redis, moto, agent simulator "
        "and EC2 double on free loopback ports) and then `bench/report.py`, which writes this file; "
        "`make bench-quick` does the same with `--quick` (100 pods, smaller counts; under 5 minutes here). "
        "Figures, never pass/fail: each stands beside its goal, its ratio to the limit where there is "
        "one, and by how much a missed goal was missed.",
        "",
        f"Rendered {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}.",
        "",
    ]
    lines += goals(results, notes_dir)
    names = {r.name for r in results}
    for result in ordered(results):
        lines += section(result, notes_dir)
    shown = {*names, OVERVIEW}
    extra = sorted(p for p in notes_dir.glob("*.md") if p.stem not in shown) if notes_dir.is_dir() else []
    for path in extra:
        lines += [path.read_text().strip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write (default {OUT})")
    args = parser.parse_args(argv)
    results = read_results()
    args.out.write_text(render(results))
    print(f"{args.out}: {len(results)} results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
