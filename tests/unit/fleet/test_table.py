"""The transition table in docs/architecture.md and these tests stay in step: every row has a test.

The table's rows are read from the markdown (the section "### The transition table"); the tests
are the ``test_<ROW>_...`` functions of this package, found by parsing its modules. A row without a
test, or a test named after a row that does not exist, fails.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

HERE = Path(__file__).parent
DOC = HERE.parents[2] / "docs" / "architecture.md"
ROW_RE = re.compile(r"^\|\s*([A-Z]\d+)\s*\|")
TEST_RE = re.compile(r"^test_([A-Z]\d+)_")


def table_rows(text: str) -> list[str]:
    """The row IDs of the transition table, in order."""
    section = text.split("### The transition table", 1)[1]
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
    unknown = {row: names for row, names in tests.items() if row not in rows}
    assert not unknown, f"tests named after rows the table does not have: {unknown}"
