"""The big tables' rows as Arrow tables, typed as schema.py declares them.

Why: dlt handles a list of dicts row by row in Python twice, once to write it to a jsonl file at extract and once
more to normalise it (coerce every value, add `_dlt_id`): at district size (1.1 M rows, grades and activity completion
most of them) that was most of the extract's CPU time. An Arrow table goes straight into a parquet file at extract,
which the normalise step hands to DuckDB as it is (to PostgreSQL it writes it as CSV, in Arrow), and the loaded
tables are the same, column for column and type for type.

The two columns dlt adds to every table are made here as dlt's json normaliser makes them: `_dlt_id` a random id
per row (dlt's own generator), and `_dlt_load_id` left for dlt to fill at extract (moodle_pipeline.py sets
NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_LOAD_ID). Left to dlt's parquet path, both would be declared 64 characters
long, and PostgreSQL would create them as varchar(64) where every other table has varchar.

Only values of exactly the declared type (or an int in a double column, which dlt turns into the same float) are
converted here. A batch holding anything else (a number sent as text, a bool where an integer is declared) is
handed to dlt as dicts, as before, so dlt coerces it, or keeps it in a variant column, exactly as it always did.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pyarrow as pa
from dlt.common.normalizers.utils import generate_dlt_ids

from . import schema
from .readable import PlainNames

# the Arrow type dlt reads back as each declared type, and loads as the same column type: `extracted_at` is a
# timestamp with time zone (UTC, microseconds) in DuckDB and PostgreSQL alike
ARROW_TYPES: Dict[str, pa.DataType] = {
    schema.T: pa.string(), schema.I: pa.int64(), schema.B: pa.bool_(), schema.D: pa.float64(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}

# the tables whose resources hand dlt Arrow tables (TableRows): the big ones, of plain columns. users (a json
# column, phones mapped per row), site_info and the small per-course tables stay dicts.
TABLES = frozenset({"grades", "activity_completion", "enrolments", "assignment_submissions", "assignment_user_flags",
                    "assignment_due_dates"})

# Rows gathered into one Arrow table: dlt computes a table's schema again for every Arrow item it is given
# (ArrowExtractor resets its cache per item), so a few large items rather than one per web-service call
ROWS_PER_TABLE = 10_000


class NotExact(Exception):
    """A value dlt would coerce, or keep in a variant column, rather than store as it is."""


def _text(values: List[Any]) -> pa.Array:
    return pa.array(values, type=pa.string())  # refuses numbers, bools, lists and dicts


def _bool(values: List[Any]) -> pa.Array:
    return pa.array(values, type=pa.bool_())  # refuses numbers and text


def _bigint(values: List[Any]) -> pa.Array:
    # inferred, not converted: converting to int64 would cut 1.5 to 1, where dlt keeps it apart; a bool among ints
    # is refused, bools alone or floats are inferred as another type
    array = pa.array(values)
    if array.type == pa.int64():
        return array
    if array.type == pa.null():
        return array.cast(pa.int64())
    raise NotExact(array.type)


def _double(values: List[Any]) -> pa.Array:
    # Arrow would read True as 1.0 here, dlt would not: the types are checked first. An int becomes float(int) in
    # both (one beyond 2**53 Arrow refuses)
    if not set(map(type, values)) <= {float, int, type(None)}:
        raise NotExact(values)
    return pa.array(values, type=pa.float64())


def _timestamp(values: List[Any]) -> pa.Array:
    # datetimes only (Arrow would read an int as microseconds); naive ones as UTC, as dlt reads them
    first = values[0] if values else None
    if type(first) is datetime and values.count(first) == len(values):  # the run's one `extracted_at`, mostly
        return pa.repeat(pa.scalar(first, type=ARROW_TYPES["timestamp"]), len(values))
    if not set(map(type, values)) <= {datetime, type(None)}:
        raise NotExact(values)
    return pa.array(values).cast(ARROW_TYPES["timestamp"])


CONVERT: Dict[str, Callable[[List[Any]], pa.Array]] = {
    schema.T: _text, schema.B: _bool, schema.I: _bigint, schema.D: _double, "timestamp": _timestamp,
}


# dlt's columns as its json normaliser declares them (dlt/common/normalizers/json/relational.py): declared with the
# tables given as Arrow tables, they keep exactly these hints (no length) whichever path a batch takes
DLT_COLUMNS: Dict[str, Dict[str, Any]] = {
    "_dlt_load_id": {"name": "_dlt_load_id", "data_type": "text", "nullable": False},
    "_dlt_id": {"name": "_dlt_id", "data_type": "text", "nullable": False, "unique": True, "row_key": True},
}


@lru_cache(maxsize=None)
def arrow_schema(table: str) -> pa.Schema:
    """The table's columns (schema.columns: declared, then `<column>_plain`, then `extracted_at`) as Arrow fields,
    then dlt's two."""
    return pa.schema([pa.field(name, ARROW_TYPES[column["data_type"]], nullable=True)
                      for name, column in schema.columns(table).items()]
                     + [pa.field(name, pa.string(), nullable=False) for name in DLT_COLUMNS])


@lru_cache(maxsize=None)
def _converters(table: str) -> Tuple[Tuple[str, Callable[[List[Any]], pa.Array]], ...]:
    return tuple((name, CONVERT[column["data_type"]]) for name, column in schema.columns(table).items())


def to_arrow(table: str, rows: List[Dict[str, Any]]) -> Optional[pa.Table]:
    """`rows` as an Arrow table with the table's declared columns; None when a value is not of its column's type
    (the rows then go to dlt as they are). Values are what a JSON answer decodes to, and our own datetimes."""
    try:
        arrays = [convert([row.get(name) for row in rows]) for name, convert in _converters(table)]
    except (NotExact, pa.ArrowException, OverflowError, ValueError, TypeError, UnicodeError):
        return None  # e.g. a number sent as text, an integer beyond int64
    # `_dlt_load_id` is a placeholder dlt replaces with the load's id as it writes the table (a column missing here
    # it would add declared 64 characters long); `_dlt_id` the same random ids the json normaliser gives
    arrays += [pa.nulls(len(rows), pa.string()), pa.array(generate_dlt_ids(len(rows)), pa.string())]
    return pa.Table.from_arrays(arrays, schema=arrow_schema(table))


class TableRows:
    """A table's rows gathered as a resource yields them, and handed on ROWS_PER_TABLE at a time: as an Arrow table,
    or as dicts where to_arrow cannot type them. `plain` adds the table's `<column>_plain` columns (readable.py) to
    the rows first, since a dlt map cannot reach into an Arrow table."""

    def __init__(self, table: str, plain: Optional[PlainNames] = None, size: Optional[int] = None) -> None:
        assert table in TABLES, f"{table}: declare it in arrow.TABLES, so that its hints carry dlt's columns"
        self.table = table
        self.plain = plain
        self.size = size or ROWS_PER_TABLE
        self.rows: List[Dict[str, Any]] = []

    def add(self, rows: List[Dict[str, Any]]) -> Iterator[Any]:
        """Takes `rows`; yields a batch when enough have gathered."""
        self.rows.extend(rows)
        if len(self.rows) >= self.size:
            yield self._batch()

    def rest(self) -> Iterator[Any]:
        """The rows not handed on yet (call once the resource has read everything)."""
        if self.rows:
            yield self._batch()

    def _batch(self) -> Any:
        rows, self.rows = self.rows, []
        if self.plain is not None:
            self.plain.add_to(self.table, rows)
        converted = to_arrow(self.table, rows)
        return rows if converted is None else converted
