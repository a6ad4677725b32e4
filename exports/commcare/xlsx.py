"""Bulk-import workbooks.

`write_string` stores every value as text: CommCare re-types numbers ("0042" -> 42), and a value
starting with "=" must never become a formula.

What CommCare reads is what openpyxl (read_only, data_only) makes of the file
(corehq/util/workbook_reading/adapters/xlsx.py). xlsxwriter escapes a literal `_xHHHH_` as `_x005F_xHHHH_`
and openpyxl turns that back, so such text arrives exactly; but openpyxl deletes every `x005F_` it reads
(openpyxl/reader/strings.py `text.replace('x005F_', '')`). That un-escaping happens for shared strings
only: xlsxwriter's constant-memory mode writes inline strings, which openpyxl returns still escaped, so
workbooks use shared strings (one chunk of rows, at most chunk_rows, is held in memory). openpyxl keeps
xlsxwriter's escapes of control characters literally (a Windows line break arrived as `_x000D_`). So before writing: line breaks become
`\n`, other C0 controls and the non-characters U+FFFE/U+FFFF are dropped, and `x005F_` is written
`x005f_`, the one spelling openpyxl leaves alone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Sequence

import xlsxwriter

# A sheet title with a space can never equal a case type (^[\w-]+$), so it can never switch CommCare's
# importer to multi-sheet mode (views.py _is_bulk_import), where create_new_cases 'on' skips new rows.
SHEET_NAME = "moodle cases"
UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def cell_text(value: object) -> str:
    text = str(value)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "x005F_" in text:
        text = text.replace("x005F_", "x005f_")
    return UNSAFE.sub("", text)


def write_workbook(path: Path, headers: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
    """Write header + rows; None leaves the cell blank (which clears the property in CommCare)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    book = xlsxwriter.Workbook(str(path), {
        "constant_memory": False,  # shared strings: see above
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
                sheet.write_string(count, col, cell_text(value))
    book.close()
    return count
