"""What every benchmark under ``bench/`` shares: its figures, the result file it writes, the machine.

A benchmark prints its figures and writes them as JSON to ``bench/results/<name>.json``
(:func:`write_result`); ``bench/report.py`` renders every result file into ``docs/benchmarks.md``,
each figure beside its goal and, where there is one, its ratio to the limit. A figure never
passes or fails a run: ``met`` only says whether the goal was reached this time, and the report
shows by how much it was missed. ``--quick`` runs (``make bench-quick``) are marked as such.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vkec2.cli.benchload import percentile as nearest_rank

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Where the plots go (committed beside docs/benchmarks.md).
PLOTS_DIR = Path(__file__).resolve().parent.parent / "docs" / "img"


@dataclass(frozen=True)
class Figure:
    """One measured figure: ``value`` in ``unit``, its ``goal`` as text ("<= 300 ms"), whether it was
    ``met`` (None: no goal), its ``ratio`` to the limit where one is defined, and a short ``note``."""

    figure: str
    value: float
    unit: str = ""
    goal: str = ""
    met: bool | None = None
    ratio: float | None = None
    note: str = ""


@dataclass
class Result:
    """A benchmark's result file: what it measured, how to run it, its figures and plots."""

    name: str
    title: str
    command: str
    description: str
    figures: list[Figure] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)  # paths relative to docs/
    quick: bool = False
    seconds: float = 0.0
    measured_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    machine: str = field(default_factory=lambda: machine())


def machine() -> str:
    """This machine in one line: cores, memory, Python."""
    cores = os.cpu_count() or 0
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f"{pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        memory = "unknown memory"
    return f"{cores} cores, {memory}, Python {platform.python_version()} on {platform.system()}"


def write_result(result: Result) -> Path:
    """Write ``result`` to ``bench/results/<name>.json`` and print its figures; returns the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{result.name}.json"
    path.write_text(json.dumps(asdict(result), indent=2) + "\n")
    for fig in result.figures:
        verdict = "met" if fig.met else "missed"
        goal = f"  (goal {fig.goal}: {verdict})" if fig.goal and fig.met is not None else ""
        ratio = f"  ratio {fig.ratio:.2f}" if fig.ratio is not None else ""
        print(f"{fig.figure}: {fig.value:.4g} {fig.unit}{ratio}{goal}")
    return path


def read_results(directory: Path = RESULTS_DIR) -> list[Result]:
    """Every result file in ``directory`` (default ``bench/results/``), sorted by name."""
    out: list[Result] = []
    for path in sorted(directory.glob("*.json")):
        raw = json.loads(path.read_text())
        raw["figures"] = [Figure(**f) for f in raw.get("figures", [])]
        out.append(Result(**raw))
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, nearest rank (``vkec2 bench``'s rule); NaN for none."""
    value = nearest_rank(values, q)
    return float("nan") if value is None else value


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
