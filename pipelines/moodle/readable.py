"""Columns a person reads on a phone, computed as rows are extracted: SMS phones in E.164, names as plain text.

Done in the extract (dlt maps on the resources), not in dbt, so the dbt project is plain SQL that an analyst can
build with `dbt build` and no Python plugin. The raw value stays beside each computed one: `phone1` as typed and
`phone1_e164`; `fullname` as stored and `fullname_plain`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

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


class PlainNames:
    """Adds `<column>_plain` to the text columns of TEXT_COLUMNS: one language (Moodle's multilang filter rules, see
    text.py), no markup or entities, whitespace collapsed. `language` is asked once, at the first row: the
    configured language, else the one Moodle reports for the token's user."""

    def __init__(self, language: Callable[[], Optional[str]]) -> None:
        self._language = language
        self._chosen: Dict[str, Optional[str]] = {}

    def language(self) -> Optional[str]:
        if "lang" not in self._chosen:
            self._chosen["lang"] = self._language()
        return self._chosen["lang"]

    def add(self, row: Dict[str, Any], meta: Any = None) -> Dict[str, Any]:
        """A dlt map: the row's plain columns, for the table its batch is marked for."""
        columns = TEXT_COLUMNS.get(table_of(meta) or "", ())
        if columns:
            lang = self.language()
            for column in columns:
                row[f"{column}_plain"] = plain_text(row.get(column), lang)
        return row

    def plain(self, values: Sequence[Any]) -> List[Optional[str]]:
        """A column's values in plain text, for resources that hand dlt Arrow tables (arrow.py), which a map cannot
        reach. The same few names and grades recur on every student's rows: each is worked out once."""
        lang = self.language()
        done: Dict[str, Optional[str]] = {}
        plain: List[Optional[str]] = []
        for raw in values:
            if type(raw) is not str:  # None stays None; anything else plain_text refuses, as the map did
                plain.append(plain_text(raw, lang))
            elif raw in done:
                plain.append(done[raw])
            else:
                plain.append(done.setdefault(raw, plain_text(raw, lang)))
        return plain
