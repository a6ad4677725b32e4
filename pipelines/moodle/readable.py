"""Columns a person reads on a phone, computed as rows are extracted: SMS phones in E.164, names as plain text.

Done in the extract (dlt maps on the resources), not in dbt, so the dbt project is plain SQL that an analyst can
build with `dbt build` and no Python plugin. The raw value stays beside each computed one: `phone1` as typed and
`phone1_e164`; `fullname` as stored and `fullname_plain`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

from .phones import to_e164
from .text import plain_text

# table -> its columns of stored Moodle text (multi-language blocks, entities, the grade report's icons), each
# read as `<column>_plain` (see schema.py)
TEXT_COLUMNS: Dict[str, Tuple[str, ...]] = {
    "course_categories": ("name",),
    "courses": ("shortname", "fullname"),
    "course_sections": ("name",),
    "course_modules": ("name",),
    "assignments": ("name",),
    "grades": ("itemname", "gradeformatted"),
}
PHONE_COLUMNS = ("phone1", "phone2")  # each read as `<column>_e164` in the users table


def table_of(meta: Any) -> Optional[str]:
    """The table a batch is marked for (dlt.mark.with_table_name), None for a resource's own table."""
    return getattr(meta, "table_name", None)


def sms_phones(default_region: Optional[str]) -> Callable[[Dict[str, Any], Any], Dict[str, Any]]:
    """A dlt map for user rows: phone1/phone2 in E.164, read in the user's country (Moodle's `country`, an ISO
    code), else in `default_region`; None where the number is empty, unparseable or impossible."""

    def add(row: Dict[str, Any], meta: Any = None) -> Dict[str, Any]:
        if table_of(meta) == "users":
            region = row.get("country") or default_region
            for column in PHONE_COLUMNS:
                row[f"{column}_e164"] = to_e164(row.get(column), region)
        return row

    return add


def plain_names(language: Callable[[], Optional[str]]) -> Callable[[Dict[str, Any], Any], Dict[str, Any]]:
    """A dlt map adding `<column>_plain` to the text columns of TEXT_COLUMNS: one language (Moodle's multilang
    filter rules, see text.py), no markup or entities, whitespace collapsed. `language` is asked once, at the
    first row: the configured language, else the one Moodle reports for the token's user."""
    chosen: Dict[str, Optional[str]] = {}

    def add(row: Dict[str, Any], meta: Any = None) -> Dict[str, Any]:
        columns = TEXT_COLUMNS.get(table_of(meta) or "", ())
        if columns:
            if "lang" not in chosen:
                chosen["lang"] = language()
            for column in columns:
                row[f"{column}_plain"] = plain_text(row.get(column), chosen["lang"])
        return row

    return add
