"""Bulk-import workbooks.

`write_string` stores every value as text: CommCare re-types numbers ("0042" -> 42), and a value
starting with "=" must never become a formula.

What CommCare reads is what openpyxl (read_only, data_only) makes of the file
(corehq/util/workbook_reading/adapters/xlsx.py). xlsxwriter escapes a literal `_xHHHH_` as `_x005F_xHHHH_`
and openpyxl turns that back, so such text arrives exactly; but openpyxl deletes every `x005F_` it reads
(openpyxl/reader/strings.py `text.replace('x005F_', '')`). That un-escaping happens for shared strings
only: xlsxwriter's constant-memory mode writes inline strings, which openpyxl returns still escaped, so
workbooks use shared strings (one chunk of rows, at most chunk_rows, is held in memory). openpyxl keeps
xlsxwriter's escapes of control characters literally (a Windows line break arrived as `_x000D_`). So before
writing: line breaks become
`\n`, other C0 controls and the non-characters U+FFFE/U+FFFF are dropped, `x005F_` is written `x005f_`
(the one spelling openpyxl leaves alone), and a typed `---`, which the importer reads as "clear", is
prefixed with an invisible word joiner so it stays a value.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import xlsxwriter

# A sheet title with a space can never equal a case type (^[\w-]+$), so it can never switch CommCare's
# importer to multi-sheet mode (views.py _is_bulk_import), where create_new_cases 'on' skips new rows.
SHEET_NAME = "moodle cases"
UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


CELL_LIMIT = 32_767  # characters an xlsx cell holds (xlsxwriter would cut silently)
NAME_LIMIT = 255  # the importer rejects a longer case name ("Name Too Long", STANDARD_CHARFIELD_LENGTH)
NEVER_WAS = "---"  # do_import.py: a value whose strip() is '---' (SCALAR_NEVER_WAS) is imported as empty
WORD_JOINER = "\u2060"  # invisible, not whitespace to str.strip(): keeps a typed '---' a value


@dataclass
class Truncation:
    external_id: str
    column: str
    length: int
    limit: int


def cell_text(value: object) -> str:
    """The text of a cell as CommCare will read it back through openpyxl (see the module's docstring)."""
    text = str(value)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "x005F_" in text:
        text = text.replace("x005F_", "x005f_")
    text = UNSAFE.sub("", text)
    if text.strip() == NEVER_WAS:
        text = WORD_JOINER + text
    return text


def write_workbook(path: Path, headers: Sequence[str], rows: Iterable[Sequence[object]],
                   truncated: Optional[List[Truncation]] = None) -> int:
    """Write header + rows; None leaves the cell blank (which clears the property in CommCare).

    A value longer than its cell may hold (a name 255, anything else 32,767 characters) is cut on purpose
    and listed in `truncated`, so the run can say which case lost what; the first column is the case's id.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written in a private folder beside the file, then renamed: a full disk or a crash leaves no partial
    # workbook under the real name, and none of xlsxwriter's temporary parts (copies of profiles) in /tmp,
    # which it would leave behind when a write fails (workbook.py _store_workbook removes them one by one).
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".writing-") as scratch:
        partial = Path(scratch) / path.name
        count = _write(partial, scratch, headers, rows, truncated)
        os.replace(partial, path)
    return count


def _write(path: Path, scratch: str, headers: Sequence[str], rows: Iterable[Sequence[object]],
           truncated: Optional[List[Truncation]]) -> int:
    limits = [NAME_LIMIT if h == "name" else CELL_LIMIT for h in headers]
    book = xlsxwriter.Workbook(str(path), {
        "constant_memory": False,  # shared strings: see above
        "strings_to_numbers": False,
        "strings_to_formulas": False,
        "strings_to_urls": False,
        "tmpdir": scratch,
    })
    sheet = book.add_worksheet(SHEET_NAME)
    for col, header in enumerate(headers):
        sheet.write_string(0, col, header)
    count = 0
    for count, row in enumerate(rows, start=1):
        for col, value in enumerate(row):
            if value is not None:
                text = cell_text(value)
                if len(text) > limits[col]:
                    if truncated is not None:
                        truncated.append(Truncation(str(row[0]), headers[col], len(text), limits[col]))
                    text = text[:limits[col]]
                sheet.write_string(count, col, text)
    book.close()
    return count
