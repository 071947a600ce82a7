"""CI's chaos run: the reduced pass (few pods, a short partition) on its own xdist worker, every
scenario held to every invariant."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.report import markdown, print_report
from tests.chaos.scenarios import REDUCED, SCENARIOS
from tests.chaos.suite import run_suite


@pytest.mark.slow
@pytest.mark.xdist_group("chaos")
@pytest.mark.timeout(REDUCED.total_deadline + 120)
def test_the_reduced_chaos_pass_keeps_every_invariant(tmp_path: Path) -> None:
    ready = [s.name for s in SCENARIOS]
    results = run_suite(REDUCED, seed=1, only=ready)
    (tmp_path / "chaos-results.md").write_text(markdown(results, "reduced pass (pytest)"))
    print_report(results, "reduced chaos pass")
    assert [r.name for r in results] == ready and all(r.pods == 3 for r in results)
    broken = {
        r.name: r.error or {k: v[:3] for k, v in r.findings.broken.items() if v} for r in results if not r.ok
    }
    assert not broken, f"scenarios broke invariants: {broken}"
