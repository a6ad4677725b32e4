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
from itertools import repeat
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import pyarrow as pa
from dlt.common.normalizers.utils import generate_dlt_ids

from . import schema
from .readable import TEXT_COLUMNS, PlainNames

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


def from_columns(table: str, columns: Mapping[str, List[Any]], count: int) -> Optional[pa.Table]:
    """The table's declared columns (each a list of `count` values) as an Arrow table; None when a value is not of
    its column's type (the rows then go to dlt as dicts). Values are what a JSON answer decodes to, and our own
    datetimes."""
    try:
        arrays = [convert(columns[name]) for name, convert in _converters(table)]
    except (NotExact, pa.ArrowException, OverflowError, ValueError, TypeError, UnicodeError):
        return None  # e.g. a number sent as text, an integer beyond int64
    # `_dlt_load_id` is a placeholder dlt replaces with the load's id as it writes the table (a column missing here
    # it would add declared 64 characters long); `_dlt_id` the same random ids the json normaliser gives
    arrays += [pa.nulls(count, pa.string()), pa.array(generate_dlt_ids(count), pa.string())]
    return pa.Table.from_arrays(arrays, schema=arrow_schema(table))


class TableRows:
    """A table's rows gathered column by column as a resource reads them, and handed on ROWS_PER_TABLE at a time:
    as an Arrow table, or as dicts where from_columns cannot type them. Column by column: a row of a Moodle record
    is never built as a dict of its own (add_items), and each record is read while it is fresh in the CPU's cache.
    `plain` adds the table's `<column>_plain` columns (readable.py), which a dlt map cannot add to an Arrow table."""

    def __init__(self, table: str, plain: Optional[PlainNames] = None, size: Optional[int] = None) -> None:
        assert table in TABLES, f"{table}: declare it in arrow.TABLES, so that its hints carry dlt's columns"
        self.table = table
        self.plain = plain
        self.size = size or ROWS_PER_TABLE
        # `<column>_plain` is worked out from `<column>` as a batch is handed on
        self.computed = {f"{column}_plain": column for column in TEXT_COLUMNS.get(table, ())}
        self.names = [name for name in schema.columns(table) if name not in self.computed]
        self.columns: Dict[str, List[Any]] = {name: [] for name in self.names}
        self.count = 0

    def add(self, rows: List[Dict[str, Any]]) -> List[Any]:
        """Takes rows made as dicts; the batch to hand on when enough have gathered."""
        for name, column in self.columns.items():
            column.extend([row.get(name) for row in rows])
        return self._counted(len(rows))

    def add_items(self, items: Sequence[Mapping[str, Any]], fixed: Mapping[str, Any],
                  given: Optional[Mapping[str, List[Any]]] = None) -> List[Any]:
        """Takes a row per Moodle record of `items`: each column its field of the same name, unless `fixed` (one
        value for every row: the course, the run's time) or `given` (a list, a value per record) says otherwise.
        The batch to hand on when enough have gathered."""
        given = given or {}
        for name, column in self.columns.items():
            if name in fixed:
                column.extend(repeat(fixed[name], len(items)))
            elif name in given:
                column.extend(given[name])
            else:
                column.extend([item.get(name) for item in items])
        return self._counted(len(items))

    def rest(self) -> List[Any]:
        """The rows not handed on yet (once the resource has read everything)."""
        return [self._batch()] if self.count else []

    def _counted(self, added: int) -> List[Any]:
        self.count += added
        return [self._batch()] if self.count >= self.size else []

    def _batch(self) -> Any:
        columns, count = self.columns, self.count
        self.columns, self.count = {name: [] for name in self.names}, 0
        for name, source in self.computed.items():
            columns[name] = self.plain.plain(columns[source]) if self.plain is not None else [None] * count
        converted = from_columns(self.table, columns, count)
        if converted is not None:
            return converted
        names = list(schema.columns(self.table))
        return [dict(zip(names, values, strict=True)) for values in zip(*(columns[name] for name in names), strict=True)]
