"""The terminal summary lists the cases every hypothesis test tried, also under pytest-xdist as CI runs
the suite, and the ``vkec2`` profile makes the cases reproducible."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.hypothesis_cases import cases_tried

ROOT = Path(__file__).resolve().parents[2]

SAMPLE = """\
from hypothesis import given, settings, strategies as st


@settings(max_examples=37)
@given(st.integers())
def test_some_integers(n):
    assert isinstance(n, int)


@given(st.text())
def test_default_bound(s):
    assert isinstance(s, str)


def test_plain():
    pass
"""


def test_the_profile_is_reproducible_and_bounded() -> None:
    assert settings().deadline is None and settings().derandomize and settings().database is None
    assert settings().max_examples == 100


def test_cases_are_summed_over_phases() -> None:
    stats = "\n".join(
        [
            "t.py::x:",
            "  - during reuse phase (0.00 seconds):",
            "    - 2 passing examples, 0 failing examples, 0 invalid examples",
            "  - during generate phase (0.10 seconds):",
            "    - 40 passing examples, 1 failing examples, 3 invalid examples",
        ]
    )
    assert cases_tried(stats) == (42, 1, 3)
    assert cases_tried("no statistics") == (0, 0, 0)


@pytest.mark.parametrize("xdist", [[], ["-n", "2", "--dist", "loadgroup"]], ids=["serial", "xdist"])
def test_the_summary_lists_every_hypothesis_test(tmp_path: Path, xdist: list[str]) -> None:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "tests.support.hypothesis_cases",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            *xdist,
            str(tmp_path / "test_sample.py"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "hypothesis: cases tried" in out
    assert "37 cases (37 passing, 0 failing, 0 invalid)  test_sample.py::test_some_integers" in out
    assert "100 cases (100 passing, 0 failing, 0 invalid)  test_sample.py::test_default_bound" in out
    assert "test_plain" not in out.split("hypothesis: cases tried")[1]
    assert "137 cases in 2 hypothesis tests" in out
