"""Property-based tests of the export's value formatting and change detection, and of phone parsing."""

from __future__ import annotations

import datetime as dt
from typing import Dict, List, Optional

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exports.commcare import journal, ledger
from pipelines.moodle.phones import to_e164

STUDENTS = ledger.CASE_TABLES[0]


def _text(value: object, duck_type: str) -> Optional[str]:
    with duckdb.connect() as con:
        con.execute(f'create table t ("v" {duck_type})')
        con.execute("insert into t values (?)", [value])
        return con.execute(f"select {ledger.text_expr(con, 'v', duck_type)} from t as m").fetchone()[0]


_PG: Dict[str, object] = {}


def _pg_text(url: str, value: object, pg_type: str) -> Optional[str]:
    """The same cell's text from a PostgreSQL warehouse (information_schema's name of the type)."""
    from moodle_commcare import postgres

    con = _PG.get(url) or _PG.setdefault(url, postgres.connect(postgres.PgSettings.from_url(url, "test")))
    return con.execute(f"select {ledger.text_expr(con, 'v', pg_type)} from (select cast(? as {pg_type}) as v) as m",  # type: ignore[attr-defined]
                       [value]).fetchone()[0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.decimals(min_value=-10**9, max_value=10**9, places=6, allow_nan=False, allow_infinity=False).map(float),
       st.integers(min_value=-(2**62), max_value=2**62),
       st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2200, 1, 1)), st.booleans())
def test_a_value_reads_the_same_from_postgresql_as_from_duckdb(postgres_url: str, double: float, whole: int,
                                                               when: dt.datetime, flag: bool) -> None:
    """The ledger digests this text: the same on both engines, so a warehouse moved from one to the other resends
    nothing (README "A server warehouse"). Doubles as the marts hold them: at most six decimals (dialect.six_decimals
    says where the engines part beyond that)."""
    for value, duck, pg in ((double, "DOUBLE", "DOUBLE PRECISION"), (whole, "BIGINT", "BIGINT"),
                            (when.date(), "DATE", "DATE"), (when, "TIMESTAMP", "TIMESTAMP WITHOUT TIME ZONE"),
                            (flag, "BOOLEAN", "BOOLEAN"), (None, "DOUBLE", "DOUBLE PRECISION")):
        assert _pg_text(postgres_url, value, pg) == _text(value, duck), (value, pg)


@settings(max_examples=150, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12))
def test_doubles_are_plain_text_without_trailing_zero(value: float) -> None:
    text = _text(value, "DOUBLE")
    assert text is not None and "e" not in text.lower()
    assert float(text) == pytest.approx(value, abs=5e-7, rel=1e-15)
    if value == int(value):
        assert text == str(int(value)), "integers without .0"


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=-(2**62), max_value=2**62))
def test_integers_are_their_digits(value: int) -> None:
    assert _text(value, "BIGINT") == str(value)


@settings(max_examples=100, deadline=None)
@given(st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2200, 1, 1)))
def test_dates_and_times_are_iso(value: dt.datetime) -> None:
    assert _text(value.date(), "DATE") == value.date().isoformat()
    assert _text(value, "TIMESTAMP") == value.replace(microsecond=0).isoformat() + "Z", "ISO 8601, UTC"


def test_booleans_and_nulls() -> None:
    assert (_text(True, "BOOLEAN"), _text(False, "BOOLEAN"), _text(None, "BOOLEAN")) == ("yes", "no", None)
    assert _text(None, "DOUBLE") is None and _text(None, "VARCHAR") is None


def _mart(con: duckdb.DuckDBPyConnection, rows: List[Dict[str, Optional[str]]]) -> None:
    con.execute("create schema if not exists commcare")
    con.execute("create or replace table commcare.commcare_student_cases (case_type varchar, external_id varchar, "
                "name varchar, owner_id varchar, city varchar, score double, close varchar)")
    con.executemany("insert into commcare.commcare_student_cases values ('student', ?, ?, 'o', ?, ?, null)",
                    [(r["external_id"], r["name"], r["city"], r["score"]) for r in rows])


def _accept_all(con: duckdb.DuckDBPyConnection) -> None:
    """What a job CommCare confirmed without row errors does to the ledger."""
    journal.ensure_tables(con)
    job = journal.record(con, STUDENTS, ledger.UPSERT, 0, "student-001.xlsx")
    journal.apply_success(con, job, {}, "upload-1")


values = st.one_of(st.none(), st.text(max_size=8))
rows_strategy = st.lists(
    st.fixed_dictionaries({"name": st.text(min_size=1, max_size=8), "city": values,
                           "score": st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False))}),
    min_size=1, max_size=15)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows_strategy, st.data())
def test_exactly_the_changed_cases_are_sent(rows, data) -> None:  # type: ignore[no-untyped-def]
    for i, row in enumerate(rows):
        row["external_id"] = f"moodle-x-u-{i}"
    with duckdb.connect() as con:
        ledger.ensure_tables(con)
        _mart(con, rows)
        ledger.plan(con, STUDENTS, chunk_rows=1000)
        assert ledger.counts(con, STUDENTS) == {"create": len(rows)}
        _accept_all(con)

        changed = data.draw(st.sets(st.sampled_from(range(len(rows)))))
        for i in changed:
            new = data.draw(values.filter(lambda v, old=rows[i]["city"]: v != old))
            rows[i]["city"] = new
        _mart(con, rows)
        ledger.plan(con, STUDENTS, chunk_rows=1000)
        sent = {r[0] for r in con.execute(
            f"select external_id from {ledger.plan_table(STUDENTS)} where _action <> 'unchanged'").fetchall()}
        assert sent == {f"moodle-x-u-{i}" for i in changed}


def test_a_new_column_with_values_is_sent_and_an_empty_one_is_not() -> None:
    with duckdb.connect() as con:
        ledger.ensure_tables(con)
        _mart(con, [{"external_id": "a", "name": "A", "city": "X", "score": 1.0},
                    {"external_id": "b", "name": "B", "city": "Y", "score": 2.0}])
        ledger.plan(con, STUDENTS, 1000)
        _accept_all(con)
        con.execute("alter table commcare.commcare_student_cases add column guardian varchar")
        con.execute("update commcare.commcare_student_cases set guardian = 'Mum' where external_id = 'a'")
        ledger.plan(con, STUDENTS, 1000)
        assert dict(con.execute(f"select external_id, _action from {ledger.plan_table(STUDENTS)}").fetchall()) == {
            "a": "update", "b": "unchanged"}


@pytest.mark.parametrize("typed, region, e164", [
    ("0712 345 678", "KE", "+254712345678"),
    ("+254-712-345-678", None, "+254712345678"),
    ("254712345678", "KE", "+254712345678"),
    ("(0712) 345678", "ke", "+254712345678"),
    ("0712.345.678", "KE", "+254712345678"),
    ("+44 (0) 7911 123456", None, "+447911123456"),
    ("07911 123456", "GB", "+447911123456"),
    ("(303) 555-0142", "US", "+13035550142"),
    ("303.555.0142 ext. 12", "US", "+13035550142"),
    ("+91 98765 43210", "IN", "+919876543210"),
    ("+256 772 123456", "KE", "+256772123456"),
    ("0712 345 678", None, None),
    ("n/a", "KE", None),
    ("12", "KE", None),
    ("", "KE", None),
    (None, "KE", None),
])
def test_phone_numbers_in_the_shapes_people_type(typed: Optional[str], region: Optional[str], e164: Optional[str]) -> None:
    assert to_e164(typed, region) == e164


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30), st.sampled_from(["KE", "UG", "GB", "US", "", None]))
def test_phone_parsing_never_raises_and_returns_e164_or_none(typed: str, region: Optional[str]) -> None:
    out = to_e164(typed, region)
    assert out is None or (out.startswith("+") and out[1:].isdigit() and len(out) <= 16)


# ------------------------------------------------------------------ names for phones (moodle_commcare/text.py)
_langs = st.sampled_from(["en", "sw", "fr", "en_us", "sw_ke", "de"])
_words = st.text(alphabet=st.characters(blacklist_characters="<>&\"", blacklist_categories=("Cs", "Cc", "Zs")),
                 min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["en", "sw", "fr"]), _words, min_size=2, max_size=3), _langs, _words)
def test_multilang_names_resolve_as_moodles_filter_does(blocks, lang, tail) -> None:  # type: ignore[no-untyped-def]
    """The connector's resolution agrees with the emulator's copy of filter/multilang (current, parents, en, first)."""
    from emulators.moodle.site import multilang
    from pipelines.moodle.text import plain_text

    stored = "".join(f'<span lang="{k}" class="multilang">{v}</span>' for k, v in blocks.items()) + " " + tail
    assert plain_text(stored, lang) == " ".join(multilang(stored, lang).split())


def test_plain_text_handles_entities_icons_and_the_old_syntax() -> None:
    from pipelines.moodle.text import plain_text

    assert plain_text("Art &amp; Design", "en") == "Art & Design"
    assert plain_text('<i class="icon fa fa-times text-danger" title="Fail"></i>4.00', "en") == "4.00"
    assert plain_text('<lang lang="en">Reading</lang><lang lang="sw">Kusoma</lang>', "sw_ke") == "Kusoma"
    assert plain_text('<span lang="fr" class="multilang">Lecture</span>', "en") == "Lecture", "one block: shown"
    assert plain_text(None, "en") is None
