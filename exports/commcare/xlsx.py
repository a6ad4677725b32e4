"""Bulk-import workbooks, written row by row.

xlsxwriter in constant-memory mode keeps one row in memory, and `write_string` stores every value as
text: CommCare re-types numbers ("0042" -> 42), and a value starting with "=" must never become a formula.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Sequence

import xlsxwriter

SHEET_NAME = "cases"  # a sheet named like a case type would switch CommCare to multi-sheet mode
# XML cannot hold C0 control characters other than tab, newline and return: xlsx escapes them as _x0007_,
# which CommCare's reader (openpyxl, read-only) keeps literally. They are dropped instead.
XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def write_workbook(path: Path, headers: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
    """Write header + rows; None leaves the cell blank (which clears the property in CommCare)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    book = xlsxwriter.Workbook(str(path), {
        "constant_memory": True,
        "strings_to_numbers": False,
        "strings_to_formulas": False,
        "strings_to_urls": False,
    })
    sheet = book.add_worksheet(SHEET_NAME)
    for col, header in enumerate(headers):
        sheet.write_string(0, col, header)
    count = 0
    for count, row in enumerate(rows, start=1):
        for col, value in enumerate(row):
            if value is not None:
                sheet.write_string(count, col, XML_UNSAFE.sub("", str(value)))
    book.close()
    return count
