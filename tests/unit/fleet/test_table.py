"""The transition table and the error table in docs/architecture.md stay in step with these tests.

The rows are read from the markdown (the sections "### The transition table" and "### What each
error does"); the tests are the ``test_<ROW>_...`` functions of this package, found by parsing its
modules. A row without a test, or a test named after a row that exists in neither table, fails.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

HERE = Path(__file__).parent
DOC = HERE.parents[2] / "docs" / "architecture.md"
ROW_RE = re.compile(r"^\|\s*([A-Z]\d+)\s*\|")
TEST_RE = re.compile(r"^test_([A-Z]\d+)_")
ERRORS = "### What each error does"


def table_rows(text: str, heading: str = "### The transition table") -> list[str]:
    """The row IDs of the table under ``heading``, in order."""
    section = text.split(heading, 1)[1]
    section = re.split(r"^#{1,3} ", section, maxsplit=1, flags=re.MULTILINE)[0]
    return [m.group(1) for line in section.splitlines() if (m := ROW_RE.match(line.strip()))]


def rows_with_tests() -> dict[str, list[str]]:
    """Row ID -> the test functions named after it, across this package."""
    found: dict[str, list[str]] = {}
    for path in sorted(HERE.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and (m := TEST_RE.match(node.name)):
                found.setdefault(m.group(1), []).append(f"{path.name}::{node.name}")
    return found


def test_the_table_is_parsed() -> None:
    rows = table_rows(DOC.read_text(encoding="utf-8"))
    assert rows[:2] == ["C1", "C2"]
    assert len(rows) >= 29  # C1-C17, R1-R2, P1-P3, F1, U1-U3, D1-D3 when this test was written
    assert len(rows) == len(set(rows)), "a row ID appears twice in the table"


def test_every_row_of_the_transition_table_has_a_test() -> None:
    rows = table_rows(DOC.read_text(encoding="utf-8"))
    tests = rows_with_tests()
    missing = [row for row in rows if row not in tests]
    assert not missing, f"rows of the transition table without a test_<ROW>_... in {HERE}: {missing}"
    known = set(rows) | set(table_rows(DOC.read_text(encoding="utf-8"), ERRORS))
    unknown = {row: names for row, names in tests.items() if row not in known}
    assert not unknown, f"tests named after rows the tables do not have: {unknown}"


def test_every_row_of_the_error_table_has_a_test() -> None:
    rows = table_rows(DOC.read_text(encoding="utf-8"), ERRORS)
    assert rows[:2] == ["E1", "E2"] and len(rows) == len(set(rows))
    assert all(row.startswith("E") for row in rows), "error rows are E<n>, apart from the transitions"
    tests = rows_with_tests()
    missing = [row for row in rows if row not in tests]
    assert not missing, f"rows of the error table without a test_<ROW>_... in {HERE}: {missing}"
