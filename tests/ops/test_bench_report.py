"""bench/report.py renders docs/benchmarks.md from result files and notes; every bench script has --help.

Cheap: the report renders sample results written to a temporary directory (no server is started),
and each ``bench/bench_*.py --help`` runs in a subprocess (argument parsing only).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import common
from bench.common import Figure, Result, read_results
from bench.report import render, verdict

ROOT = Path(__file__).resolve().parents[2]


def sample(name: str, figures: list[Figure], plots: list[str] | None = None) -> Result:
    return Result(
        name=name,
        title=f"Title of {name}",
        command=f"PYTHONPATH=. python bench/bench_{name}.py",
        description=f"What {name} measures.",
        figures=figures,
        plots=plots or [],
        quick=True,
        seconds=12.0,
    )


def test_report_renders_each_result_with_its_table_plots_and_notes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results_dir, notes = tmp_path / "results", tmp_path / "notes"
    notes.mkdir()
    (notes / "fleet_limit.md").write_text("The measured bottleneck: moto's single thread.\n")
    (notes / "extra_section.md").write_text("## Hand-written\n\nKept as written.\n")
    (notes / "overview.md").write_text("Bottlenecks, all sections.\n")
    limit = sample(
        "fleet_limit",
        [
            Figure("throughput", 1.5, "pods/s", goal=">= 0.8 of the limit", met=False, ratio=0.6),
            Figure("p50", 0.45, "s", goal="<= 0.3 s", met=False),
            Figure("duplicates", 0, "pods", goal="0", met=True),
            Figure("a | b", float("nan"), "s"),
        ],
        plots=["img/fleet-scaling.png"],
    )
    other = sample("aaa_other", [Figure("rss", 120.0, "MiB")])
    monkeypatch.setattr(common, "RESULTS_DIR", results_dir)
    for result in (other, limit):
        common.write_result(result)
    text = render(read_results(results_dir), notes)

    assert text.startswith("# Benchmarks\n") and "make bench-quick" in text
    assert text.index("## Title of fleet_limit") < text.index("## Title of aaa_other")  # ORDER first
    assert "| throughput | 1.5 pods/s | >= 0.8 of the limit | 0.60 | missed by 25 % |" in text
    assert "| p50 | 0.45 s | <= 0.3 s |  | missed by 50 % |" in text
    assert "| duplicates | 0 pods | 0 |  | met |" in text
    assert "| a \\| b | n/a |" in text
    assert "![Title of fleet_limit](img/fleet-scaling.png)" in text
    bottleneck = text.index("The measured bottleneck")
    assert text.index("## Title of fleet_limit") < bottleneck < text.index("## Title of aaa_other")
    assert text.rstrip().endswith("Kept as written.")
    assert "(quick mode)" in text and "`PYTHONPATH=. python bench/bench_aaa_other.py`" in text
    # Every figure with a goal, once more at the top, with the overview note under it.
    glance, first = text.index("## Goals at a glance"), text.index("## Title of fleet_limit")
    assert glance < text.index("Bottlenecks, all sections.") < first
    top = text[glance:first]
    assert "| throughput | 1.5 pods/s (ratio 0.60) | >= 0.8 of the limit | missed by 25 % |" in top
    assert "| Title of fleet_limit (quick) | duplicates | 0 pods | 0 | met |" in top
    assert "rss" not in top and text.count("Bottlenecks, all sections.") == 1


def test_verdict_without_a_goal_is_blank_and_an_unparsable_goal_just_missed() -> None:
    assert verdict(Figure("x", 1.0)) == ""
    assert verdict(Figure("x", 1.0, goal="fast", met=False)) == "missed"
    assert verdict(Figure("x", 150.0, goal="< 120 s", met=False)) == "missed by 25 %"


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "bench").glob("bench_*.py")))
def test_every_bench_script_accepts_help(script: str) -> None:
    done = subprocess.run(
        [sys.executable, f"bench/{script}", "--help"],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout
