"""The suite's hypothesis settings and the count of cases every hypothesis test tried (a pytest plugin).

Loaded by ``tests/conftest.py`` (``pytest_plugins``). It registers and loads the ``vkec2`` profile
(no deadline, a bounded number of examples, derandomized and without an example database, so a CI
run tries the same cases every time; ``HYPOTHESIS_PROFILE=thorough`` raises the default to 2,000
random cases), and :func:`pytest_terminal_summary` prints a "hypothesis: cases tried" section: one
line per hypothesis test with the cases it tried in all phases. It reads the statistics that
hypothesis's own pytest plugin attaches to each test's teardown report; reports travel from
pytest-xdist's workers to the controller with their attributes, so the count works under
``-n 2 --dist loadgroup`` too. Written here rather than using ``--hypothesis-show-statistics``,
which prints a paragraph per test, not one line.
"""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "vkec2",
    deadline=None,  # a loaded 2-core CI box makes timings meaningless
    max_examples=100,  # a test may ask for fewer or more
    derandomize=True,  # the same cases on every run: CI is reproducible
    database=None,  # nothing written under .hypothesis/, nothing replayed from another run
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "thorough", parent=settings.get_profile("vkec2"), max_examples=2000, derandomize=False
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "vkec2"))

#: The per-phase line of hypothesis's statistics: "- 100 passing examples, 0 failing examples, ...".
_CASES = re.compile(r"(\d+) passing examples, (\d+) failing examples, (\d+) invalid examples")
#: Where hypothesis's pytest plugin keeps a test's statistics on its (teardown) report.
_STATS_KEY = "_hypothesis_stats"


def cases_tried(stats: str) -> tuple[int, int, int]:
    """(passing, failing, invalid) summed over the phases of one test's statistics text."""
    counts = [tuple(int(n) for n in match) for match in _CASES.findall(stats)]
    if not counts:
        return (0, 0, 0)
    passing, failing, invalid = (sum(column) for column in zip(*counts, strict=True))
    return passing, failing, invalid


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per hypothesis test: the cases it tried (passing, failing, invalid) in all phases."""
    rows: dict[str, tuple[int, int, int]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            stats = getattr(report, "__dict__", {}).get(_STATS_KEY)
            if isinstance(stats, str):
                rows[report.nodeid] = cases_tried(stats)
    if not rows:
        return
    terminalreporter.section("hypothesis: cases tried")
    for nodeid, (passing, failing, invalid) in sorted(rows.items()):
        total = passing + failing + invalid
        terminalreporter.write_line(
            f"{total:6d} cases ({passing} passing, {failing} failing, {invalid} invalid)  {nodeid}"
        )
    total = sum(sum(row) for row in rows.values())
    terminalreporter.write_line(f"{total:6d} cases in {len(rows)} hypothesis tests")
