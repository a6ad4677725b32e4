"""The README's failure-modes table is a promise: every row names the tests that make it happen and check
what the user sees. This walks the table: each row must name at least one test, and each test named must
exist, so a row cannot outlive its test, nor be added without one."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from moodle_commcare.failures import ExitCode

ROOT = Path(__file__).resolve().parent.parent
NODE = re.compile(r"`(test_\w+\.py)::(test_\w+)`")


def failure_rows() -> List[Tuple[str, str, str]]:
    """(what happens, exit, tested by) of each row of the table under '## Failure modes'."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Failure modes", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 5 and cells[0] not in ("what happens", "---"):
            rows.append((cells[0], cells[2], cells[4]))
    return rows


def defined_tests() -> Dict[str, Set[str]]:
    found: Dict[str, Set[str]] = {}
    for path in (ROOT / "tests").glob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found[path.name] = {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}
    return found


ROWS = failure_rows()
DOCUMENTED_CODES = {str(int(c)) for c in ExitCode}


def test_the_table_is_there_and_covers_the_issue() -> None:
    assert len(ROWS) >= 35, "one row per failure mode"
    for words in ("Extract killed", "Transform killed", "paging", "moved", "future", "Text typed", "longer than",
                  "Two runs", "Ctrl-C", "full (or a file-size limit, `ulimit -f`) during an extract",
                  "Disk full during an export", "`null`", "Credentials", "telemetry"):
        assert any(words in what for what, _, _ in ROWS), words


@pytest.mark.parametrize("what, code, tests", ROWS, ids=[r[0][:40] for r in ROWS])
def test_each_row_names_tests_that_exist_and_a_documented_exit_code(what: str, code: str, tests: str) -> None:
    named = NODE.findall(tests)
    assert named, f"no test named for: {what}"
    defined = defined_tests()
    for file, name in named:
        assert name in defined.get(file, set()), f"{file}::{name} (row: {what}) does not exist"
    first = code.split()[0]
    assert first in DOCUMENTED_CODES or first == "(killed)", f"exit {code} of row {what!r} is not an ExitCode"
