"""The big tables go to dlt as Arrow tables (pipelines/moodle/arrow.py), and load exactly as the same rows given as
dicts did: the same columns with the same types, in DuckDB and in PostgreSQL, the same values, the same row counts.
A value that is not of its column's declared type sends its batch the old way, where dlt coerces it."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pyarrow as pa
import pytest

from emulators.moodle import MoodleEmulator
from moodle_commcare.warehouse import Warehouse as Target
from pipelines.moodle import arrow, schema
from pipelines.moodle.readable import PlainNames
from pipelines.moodle_pipeline import ExtractReport, run_extract

from .conftest import SMALL

NOW = datetime(2026, 1, 5, 8, 30, 15, 123456, tzinfo=timezone.utc)


def completion(**values: Any) -> Dict[str, Any]:
    row: Dict[str, Any] = {name: None for name in schema.TABLES["activity_completion"]}
    row.update(user_id=3, course_id=2, cmid=40, modname="quiz", state=1, hascompletion=True, extracted_at=NOW)
    row.update(values)
    return row


def to_arrow(table: str, rows: List[Dict[str, Any]]) -> Any:
    """`rows` (dicts) as arrow.from_columns takes them: a list per declared column."""
    return arrow.from_columns(table, {name: [row.get(name) for row in rows] for name in schema.columns(table)},
                              len(rows))


def test_rows_of_the_declared_types_become_an_arrow_table_typed_as_declared() -> None:
    table = to_arrow("activity_completion", [completion(), completion(user_id=4, state=None)])
    assert table is not None
    assert table.schema == arrow.arrow_schema("activity_completion")
    assert table.column_names == [*schema.columns("activity_completion"), "_dlt_load_id", "_dlt_id"]
    assert table.column("user_id").to_pylist() == [3, 4]
    assert table.column("state").to_pylist() == [1, None]
    assert table.column("timecompleted").type == pa.int64()  # no value at all: still the declared type
    assert table.column("extracted_at").to_pylist() == [NOW, NOW]
    assert table.column("_dlt_load_id").null_count == 2  # dlt writes the load's id in as it extracts
    ids = table.column("_dlt_id").to_pylist()
    assert len(set(ids)) == 2 and all(len(i) == 14 for i in ids)  # as random as dlt's json normaliser's


def test_an_int_in_a_double_column_is_the_same_float_dlt_makes_of_it() -> None:
    grade = {name: None for name in schema.columns("grades")}
    grade.update(course_id=1, user_id=2, grade_item_id=3, graderaw=7, grademax=10.5, extracted_at=NOW)
    table = to_arrow("grades", [grade])
    assert table is not None
    assert table.column("graderaw").to_pylist() == [7.0] and table.column("graderaw").type == pa.float64()


@pytest.mark.parametrize("column, value", [
    ("user_id", "3"),  # a number as text: dlt makes it 3
    ("state", 1.5),  # Arrow would cut it to 1; dlt keeps it in a variant column
    ("state", True),  # bool is not an integer to dlt
    ("state", 2 ** 64),  # beyond int64
    ("modname", 5),  # dlt makes it "5"
    ("hascompletion", 1),  # dlt makes it True
    ("hascompletion", "true"),
    ("extracted_at", 1767601815),
])
def test_a_value_not_of_its_declared_type_leaves_the_batch_to_dlt(column: str, value: Any) -> None:
    assert to_arrow("activity_completion", [completion(), completion(**{column: value})]) is None
    rows = arrow.TableRows("activity_completion")
    batches = rows.add([completion(), completion(**{column: value})]) + rows.rest()
    assert len(batches) == 1 and isinstance(batches[0], list) and len(batches[0]) == 2


def test_a_bool_in_a_double_column_is_left_to_dlt() -> None:
    grade = {name: None for name in schema.columns("grades")}
    grade.update(course_id=1, user_id=2, grade_item_id=3, graderaw=True, extracted_at=NOW)
    assert to_arrow("grades", [grade]) is None  # Arrow would read it as 1.0


def test_rows_are_handed_on_in_tables_of_many_calls_with_their_plain_names() -> None:
    asked: List[str] = []

    def language() -> Optional[str]:
        asked.append("lang")
        return "sw"

    rows = arrow.TableRows("grades", PlainNames(language), size=3)
    grade = {name: None for name in schema.TABLES["grades"]}
    named = '<span lang="en" class="multilang">Quiz</span><span lang="sw" class="multilang">Jaribio</span>'
    calls = [[dict(grade, course_id=1, user_id=u, grade_item_id=i, itemname=named, gradeformatted="7,00 &ndash; 10",
                   extracted_at=NOW) for i in (1, 2)] for u in range(4)]
    batches = [batch for call in calls for batch in rows.add(call)] + rows.rest()
    assert [b.num_rows for b in batches] == [4, 4]  # each once 3 rows had gathered, then the rest
    assert asked == ["lang"]  # asked once, when the first rows were converted
    assert set(batches[0].column("itemname_plain").to_pylist()) == {"Jaribio"}
    assert set(batches[1].column("gradeformatted_plain").to_pylist()) == {"7,00 – 10"}
    assert set(batches[0].column("itemname").to_pylist()) == {named}


def test_rows_of_moodle_records_are_the_rows_built_as_dicts() -> None:
    statuses = [{"cmid": 40 + i, "modname": "quiz", "state": i % 2, "user_id": 999, "tracking": None} for i in range(5)]
    fixed = {"user_id": 3, "course_id": 2, "extracted_at": NOW}
    dicts = [{**{k: st.get(k) for k in schema.TABLES["activity_completion"]}, **fixed} for st in statuses]
    from_items, from_dicts = arrow.TableRows("activity_completion"), arrow.TableRows("activity_completion")
    assert from_items.add_items(statuses, fixed=fixed) == [] and from_dicts.add(dicts) == []
    (items_table,), (dicts_table,) = from_items.rest(), from_dicts.rest()
    assert items_table.drop(["_dlt_id"]).equals(dicts_table.drop(["_dlt_id"]))
    assert items_table.column("user_id").to_pylist() == [3] * 5  # fixed, not the record's own field

    with_text = arrow.TableRows("activity_completion")
    with_text.add_items(statuses[:1], fixed={**fixed, "state": "1"})  # dlt coerces this one: the batch stays dicts
    (rows,) = with_text.rest()
    assert rows == [{**dicts[0], "state": "1"}]


def test_dlt_columns_are_declared_for_every_table_given_as_arrow() -> None:
    from pipelines.moodle import resources

    for table in arrow.TABLES:
        columns = resources._hints(table)["columns"]
        assert {name: columns[name] for name in arrow.DLT_COLUMNS} == arrow.DLT_COLUMNS


# ---------------------------------------------------------------- the same tables as dicts made

COLUMNS_SQL = ("select table_name, column_name, ordinal_position, data_type, is_nullable, character_maximum_length, "
               "numeric_precision, datetime_precision from information_schema.columns where table_schema = "
               "'moodle_raw' order by table_name, ordinal_position")
PER_RUN = ("_dlt_id", "_dlt_load_id", "extracted_at")


def loaded(target: Target) -> Tuple[List[Tuple[Any, ...]], Dict[str, List[str]]]:
    """The raw tables' columns, and each table's rows (without what differs per run), sorted."""
    con = target.connect()
    try:
        columns = [tuple(row) for row in con.execute(COLUMNS_SQL).fetchall()]
        tables: Dict[str, List[str]] = {}
        for table in sorted({c[0] for c in columns if not str(c[0]).startswith("_dlt")}):
            names = ", ".join(f'"{c[1]}"' for c in columns if c[0] == table and c[1] not in PER_RUN)
            tables[table] = sorted(map(repr, con.execute(f'select {names} from moodle_raw."{table}"').fetchall()))
            ids = con.execute(f'select count(distinct _dlt_id), count(*), count(_dlt_load_id) '
                              f'from moodle_raw."{table}"').fetchall()[0]
            assert ids[0] == ids[1] == ids[2], (table, ids)  # every row with its own id and its load's
    finally:
        con.close()
    return columns, tables


@pytest.fixture(params=["duckdb", "postgres"])
def targets(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tuple[Target, Target]]:
    if request.param == "duckdb":
        yield Target.of(tmp_path / "arrow.duckdb"), Target.of(tmp_path / "dicts.duckdb")
        return
    from .conftest import fresh_postgres_database

    admin = request.getfixturevalue("postgres_url")
    with fresh_postgres_database(admin) as first, fresh_postgres_database(admin) as second:
        yield Target.of(first), Target.of(second)


@pytest.mark.parametrize("dicts", ["every batch", "every other batch"])
def test_the_tables_load_exactly_as_the_same_rows_given_as_dicts(
        targets: Tuple[Target, Target], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dicts: str) -> None:
    as_arrow, as_dicts = targets
    with MoodleEmulator(spec=SMALL) as moodle:
        def extract(target: Target, name: str) -> ExtractReport:
            return run_extract(target, pipelines_dir=tmp_path / name, base_url=moodle.base_url, token=moodle.token,
                               allow_insecure_http=True)

        monkeypatch.setattr(arrow, "ROWS_PER_TABLE", 50)  # several batches per table
        arrow_report = extract(as_arrow, "arrow")
        converted = arrow.from_columns
        count = [0]

        def sometimes(table: str, columns: Dict[str, List[Any]], rows: int) -> Any:
            count[0] += 1
            return converted(table, columns, rows) if dicts == "every other batch" and count[0] % 2 else None

        monkeypatch.setattr(arrow, "from_columns", sometimes)
        dicts_report = extract(as_dicts, "dicts")
    assert count[0] > 2 * len(arrow.TABLES), count  # several batches of most tables
    assert arrow_report.rows_loaded == dicts_report.rows_loaded
    assert arrow_report.rows_loaded["grades"] > 0 and arrow_report.rows_loaded["activity_completion"] > 0
    arrow_columns, arrow_rows = loaded(as_arrow)
    dicts_columns, dicts_rows = loaded(as_dicts)
    assert arrow_columns == dicts_columns
    assert arrow_rows == dicts_rows
