"""Tables a person reads at a glance after a run."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from pipelines.moodle_pipeline import ExtractReport

from .transform import TransformReport


def extract_tables(report: ExtractReport) -> list[Table]:
    rows = Table(title="Tables in DuckDB", title_justify="left")
    rows.add_column("table")
    rows.add_column("rows loaded this run", justify="right")
    rows.add_column("rows in table", justify="right")
    for name in sorted(report.table_rows):
        rows.add_row(name, f"{report.rows_loaded.get(name, 0):,}", f"{report.table_rows[name]:,}")

    calls = Table(title="Moodle requests", title_justify="left")
    calls.add_column("web-service function")
    calls.add_column("requests", justify="right")
    for function, count in sorted(report.stats.requests.items()):
        calls.add_row(function, f"{count:,}")
    calls.add_section()
    calls.add_row("total (retries included)", f"{report.stats.total_requests:,}")
    calls.add_row("of which retries", f"{report.stats.retries:,}")
    return [rows, calls]


def print_extract(console: Console, report: ExtractReport) -> None:
    for table in extract_tables(report):
        console.print(table)
    console.print(f"Loaded into [bold]{report.duckdb}[/] (dataset moodle_raw) in {report.seconds:.1f}s.")


def print_cases(console: Console, report: TransformReport, summary: list[dict]) -> None:
    built = Table(title="dbt build", title_justify="left")
    for column in ("models", "seeds", "unit tests", "data tests"):
        built.add_column(column, justify="right")
    built.add_row(*(f"{report.count(kind)}" for kind in ("model", "seed", "unit_test", "test")))
    console.print(built)
    cases = Table(title="CommCare cases (schema commcare)", title_justify="left")
    cases.add_column("case type")
    cases.add_column("engagement")
    cases.add_column("open", justify="right")
    cases.add_column("to close", justify="right")
    for row in summary:
        cases.add_row(row["case_type"], row["engagement_status"], f"{row['open']:,}", f"{row['to_close']:,}")
    console.print(cases)
