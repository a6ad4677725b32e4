"""Tables a person reads at a glance after a run."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pipelines.moodle_pipeline import ExtractReport

from .check import CheckReport
from .sync import SyncReport
from .transform import TransformReport
from .warehouse import CASE_TYPES


def extract_tables(report: ExtractReport) -> list[Table]:
    rows = Table(title="Tables in the warehouse", title_justify="left")
    rows.add_column("table")
    rows.add_column("rows loaded this run", justify="right")
    rows.add_column("rows in table", justify="right")
    for name in sorted(report.table_rows):
        rows.add_row(name, f"{report.rows_loaded.get(name, 0):,}", f"{report.table_rows[name]:,}")

    calls = Table(title="Moodle requests", title_justify="left")
    calls.add_column("web-service function")
    calls.add_column("HTTP requests", justify="right")
    calls.add_column("in batches", justify="right")
    calls.add_column("calls", justify="right")
    made = report.stats.web_service_calls  # a batch's calls under their own function
    batches = report.stats.batches  # the batch requests that carried them
    for function in sorted(set(report.stats.requests) | set(made)):
        calls.add_row(function, f"{report.stats.requests.get(function, 0):,}",
                      f"{batches[function]:,}" if batches.get(function) else "",
                      f"{made.get(function, 0):,}" if function in made else "")
    calls.add_section()
    calls.add_row("total (retries included)", f"{report.stats.total_requests:,}", "", f"{sum(made.values()):,}")
    calls.add_row("of which retries", f"{report.stats.retries:,}", "", "")
    return [rows, calls]


def print_extract(console: Console, report: ExtractReport) -> None:
    if report.recovered:
        console.print(f"[yellow]Recovered:[/] an earlier extract was interrupted while loading; its "
                      f"{report.recovered} load package(s) were loaded first, then this run's data.")
    for table in extract_tables(report):
        console.print(table)
    if report.warnings:
        hidden = Table(title="Data Moodle hid from the token's user (loaded without it)", title_justify="left")
        for column in ("what", "to get it"):
            hidden.add_column(column)
        for w in report.warnings:
            hidden.add_row(w["what"], w["fix"])
        console.print(hidden)
    console.print(f"Loaded into [bold]{report.where or report.duckdb}[/] (dataset moodle_raw) in {report.seconds:.1f}s.")


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


def print_export(console: Console, report) -> None:  # type: ignore[no-untyped-def]
    table = Table(title="CommCare export" + (" (dry run: nothing written or sent)" if report.dry_run else
                                             "" if report.uploaded else " (files only: upload with --upload)"),
                  title_justify="left")
    table.add_column("case type")
    if report.dry_run or not report.uploaded:
        for column in ("create", "reopen", "update", "close", "held back", "unchanged", "skipped"):
            table.add_column(column, justify="right")
        for t in report.types:
            p = t.planned
            p = {**p, "update": p.get("update", 0) + p.get("resend", 0)}
            table.add_row(t.case_type, *(f"{p.get(k, 0):,}" for k in (
                "create", "reopen", "update", "close", "withheld", "unchanged", "skip_closed")))
    else:
        for column in ("created", "updated", "closed", "failed", "held back", "unchanged", "skipped"):
            table.add_column(column, justify="right")
        for t in report.types:
            table.add_row(t.case_type, f"{t.created:,}", f"{t.updated:,}", f"{t.closed:,}", f"{t.failed:,}",
                          f"{t.planned.get('withheld', 0):,}", f"{t.planned.get('unchanged', 0):,}",
                          f"{t.planned.get('skip_closed', 0):,}")
    settle = report.settle
    if settle.jobs:
        console.print(f"Earlier jobs: {settle.settled} of {settle.jobs} settled in {settle.seconds:.1f} s"
                      + (f" ({settle.looked_up:,} rows looked up by external id)" if settle.looked_up else ""))
        for note in settle.notes:
            console.print(f"  [yellow]held back[/] {note}")
    table.caption = ("reopen: closed in CommCare, back in Moodle: a new case (<id>-r<n>). update: includes re-sends "
                     "of cases an earlier job left unconfirmed. failed: stays pending. "
                     "held back: in a CommCare job not yet settled. skipped: closed in Moodle, never created.")
    table.caption_justify = "left"
    console.print(table)
    for t in report.types:
        for example in t.examples:
            console.print(f"  e.g. {t.case_type}: {example}")
        for ext, error in list(t.errors.items())[:10]:
            console.print(f"  [red]rejected[/] {t.case_type} {ext}: {error}")
        for cut in t.truncated[:10]:
            console.print(f"  [yellow]cut[/] {t.case_type} {cut.external_id}: {cut.column} had {cut.length:,} "
                          f"characters, CommCare's importer takes {cut.limit:,} (all are in `status`'s run log)")
    if report.refusal:
        console.print(f"[bold yellow]An export now would stop:[/] {report.refusal}", soft_wrap=True)
    files = [f for t in report.types for f in t.files]
    if files:
        console.print(f"Wrote {len(files)} workbook(s) to [bold]{report.out_dir}[/]:")
        for f in files:
            console.print(f"  {f}")
    elif not report.dry_run:
        console.print("Nothing changed: no workbook written.")


def print_status(console: Console, path, runs: list) -> None:  # type: ignore[no-untyped-def]
    table = Table(title=f"Last runs against {path}", title_justify="left")
    for column in ("stage", "status", "finished (UTC)", "what it did"):
        table.add_column(column)
    for run in runs:
        summary = run["summary"]
        if run["stage"] == "sync":
            continue  # its own table (print_recent_syncs)
        if run["stage"] == "extract":
            what = (f"{sum((summary.get('rows_loaded') or {}).values()):,} rows loaded, "
                    f"{summary.get('requests', 0):,} requests") if "error" not in summary else summary["error"]
        elif run["stage"] == "transform":
            what = (f"{summary.get('commcare_student_cases', '?')} student cases, "
                    f"{summary.get('commcare_enrolment_cases', '?')} enrolment cases, "
                    + (f"{summary['commcare_student_course_cases']} students' own course cases, "
                       if summary.get("commcare_student_course_cases") else "")
                    + f"{summary.get('commcare_unowned_cases', '?')} without owner"
                    + (f", {summary['commcare_unmapped_students']} students without a worker of their own"
                       if summary.get("commcare_unmapped_students") else ""))
        else:
            parts = []
            for case_type in [t.name for t in CASE_TYPES]:
                s = summary.get(case_type)
                if s:
                    parts.append(f"{case_type}: {s['created']} created, {s['updated']} updated, "
                                 f"{s['closed']} closed, {s['failed']} failed")
            what = "; ".join(parts) + ("" if summary.get("uploaded") else " (files only)")
        table.add_row(run["stage"], run["status"], f"{run['finished_at']:%Y-%m-%d %H:%M:%S}", what)
    console.print(table)


_STATUS_STYLE = {"OK": "green", "WARN": "yellow", "FAIL": "bold red", "SKIPPED": "dim"}


def print_check(console: Console, report: CheckReport, only_problems: bool = False) -> None:
    """One row per check; for each WARN or FAIL, where to fix it, the capability, and what is lost if left.
    Every text is printed as it is (no rich markup): messages quote [sources.moodle] and the like."""
    problems = bool(report.problems())
    table = Table(title="Pre-flight check" + (": what needs attention" if only_problems else ""), title_justify="left",
                  show_lines=problems)
    table.add_column("status", no_wrap=True)
    table.add_column("check", ratio=1)
    table.add_column("found", ratio=2)
    if problems:
        table.add_column("to fix (and if left)", ratio=2)
    for f in report.findings:
        if only_problems and f.status.value not in ("WARN", "FAIL"):
            continue
        fix = Text(f.fix)
        if f.capability:
            fix.append(f"\ncapability: {f.capability}", style="cyan")
        if f.loses:
            fix.append(f"\nif left: {f.loses}", style="dim")
        table.add_row(Text(f.status.value, style=_STATUS_STYLE[f.status.value]), Text(f"{f.system}: {f.title}"),
                      Text(f.detail), *([fix] if problems else []))
    counts = {s: sum(1 for f in report.findings if f.status.value == s) for s in ("OK", "WARN", "FAIL", "SKIPPED")}
    cost = ", ".join(f"{end}: {n} requests in {report.seconds.get(end, 0):.1f} s" for end, n in report.requests.items())
    table.caption = (f"{counts['OK']} OK, {counts['WARN']} warnings, {counts['FAIL']} failures, {counts['SKIPPED']} "
                     f"not checked ({cost}). Nothing was changed on either side.")
    table.caption_justify = "left"
    console.print(table)


_EXIT_MEANING = {0: "done", 10: "done, with warnings", 4: "Moodle failed: retry later", 5: "CommCare failed: retry later",
                 6: "busy: retry later", 130: "interrupted: retry later"}


def _stage_figures(stage: str, figures: dict) -> str:
    keys = {"check": ("requests",), "extract": ("requests", "rows"), "transform": ("models",),
            "export": ("sent", "failed")}.get(stage, ())
    parts = []
    for key in keys:
        value = figures.get(key)
        if isinstance(value, dict):
            value = sum(value.values())
        if value is not None:
            parts.append(f"{value:,} {key}")
    return ", ".join(parts)


def print_sync(console: Console, report: SyncReport) -> None:
    """One table for the whole run: each stage's outcome and figures, then the warnings and the outcome."""
    table = Table(title=f"Sync {report.run_id}" + (" (full refresh)" if report.full_refresh else ""),
                  title_justify="left")
    for column in ("stage", "status", "seconds", "what it did"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for stage in ("check", "extract", "transform", "export", "publish"):
        figures = report.stages.get(stage)
        if figures is None:
            continue
        what = _stage_figures(stage, figures) if stage != "publish" else f"analysts read {report.published}"
        table.add_row(stage, Text(figures.get("status", ""), style="green" if figures.get("status") == "ok" else "red"),
                      f"{figures['seconds']:.1f}" if "seconds" in figures else "", Text(what))
    code = int(report.exit_code)
    table.caption = (f"exit {code}: {_EXIT_MEANING.get(code, 'needs a person')}, in {report.seconds:.1f} s"
                     + (f"; {len(report.warnings)} warning(s)" if report.warnings else ""))
    table.caption_justify = "left"
    console.print(table)
    for warning in report.warnings[:20]:
        console.print(Text(f"  warning: {warning}", style="yellow"))


def print_recent_syncs(console: Console, runs: list, next_due: Optional[datetime]) -> None:
    """The last syncs, newest first: when, how long, how it ended, what it read and sent."""
    table = Table(title="Recent syncs", title_justify="left")
    for column in ("started (UTC)", "took", "exit", "requests", "cases sent", "warnings", "error"):
        table.add_column(column, justify="right" if column in ("took", "exit", "requests", "cases sent", "warnings")
                         else "left")
    for run in runs:
        s = run["summary"]
        stages = s.get("stages") or {}
        table.add_row(f"{run['started_at']:%Y-%m-%d %H:%M:%S}", f"{s.get('seconds', 0):.0f} s", str(s.get("exit_code", "")),
                      f"{(stages.get('extract') or {}).get('requests', 0):,}",
                      f"{(stages.get('export') or {}).get('sent', 0):,}", str(len(s.get("warnings") or [])),
                      Text(s.get("error") or ""))
    if next_due is not None:
        table.caption = f"next sync due {next_due:%Y-%m-%d %H:%M} (MOODLE_COMMCARE_SCHEDULE)"
        table.caption_justify = "left"
    console.print(table)


def print_phone(console: Console, cases: dict, title: str) -> None:
    """What one mobile worker's phone holds of a student's own courses (the CommCare emulator's restore view): one
    row per course, the outline's first lines, the grades and what is still to do, as the app would read them."""
    table = Table(title=title, title_justify="left", show_lines=True)
    for column in ("course", "outline (first lines)", "grades", "to do / overdue"):
        table.add_column(column, overflow="fold")
    by_id = {c.case_id: c for c in cases.values()}
    for case in sorted((c for c in cases.values() if c.case_type == "student_course"), key=lambda c: c.name):
        parent = by_id.get(case.indices.get("parent", (None, ""))[1])
        outline = (parent.properties.get("outline", "") if parent else "").splitlines()
        due = [f"overdue: {line}" for line in case.properties.get("overdue", "").splitlines()]
        due += [f"to do: {line}" for line in case.properties.get("to_do", "").splitlines()]
        table.add_row(Text(case.name), Text("\n".join(outline[:4] + (["…"] if len(outline) > 4 else []))),
                      Text(case.properties.get("grades", "") or "-"), Text("\n".join(due[:4]) or "-"))
    console.print(table)
