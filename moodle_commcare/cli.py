"""Keep CommCare case records in step with Moodle: extract (dlt) -> transform (dbt) -> export (CommCare bulk import)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Union

import typer
from rich.console import Console
from rich.markup import escape

from pipelines.moodle_pipeline import run_extract

from .failures import ExitCode, classify, disk_full_message
from .runlog import utcnow
from .warehouse import Warehouse

WAREHOUSE_OPTION = typer.Option(
    None, "--warehouse", "--duckdb", metavar="WAREHOUSE",
    help="The warehouse: a DuckDB file (or duckdb:///path/to/file.duckdb), or a PostgreSQL database "
         "postgresql://USER@HOST:PORT/DATABASE, its password in $MOODLE_COMMCARE_WAREHOUSE_PASSWORD (default: "
         "$MOODLE_COMMCARE_WAREHOUSE, else ./moodle.duckdb). --duckdb is its former name.")
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
err = Console(stderr=True)


def _progress(status):  # type: ignore[no-untyped-def]
    def update(stats) -> None:  # type: ignore[no-untyped-def]
        status.update(f"Extracting from Moodle… {stats.total_requests:,} requests")
    return update


@contextmanager
def failing_as(title: str, where: Union[str, Callable[[], str]] = "the warehouse") -> Iterator[None]:
    """Every error a user can cause or meet ends here as one line and a documented exit code (failures.py);
    only a bug shows a traceback. Ctrl-C leaves at once: worker threads still waiting on Moodle or CommCare
    are not waited for, since nothing they could still do is kept (see the README's failure modes)."""
    try:
        yield
    except typer.Exit:
        raise
    except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt and dlt's signal exception included
        found = classify(exc)
        if found is None:
            raise
        code, cause = found
        if code == ExitCode.INTERRUPTED:
            err.print(f"[bold yellow]{title}: interrupted.[/] Nothing half-done is kept: the next run carries on.")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        if code == ExitCode.DISK_FULL:
            message = disk_full_message(cause, where() if callable(where) else where)
        else:
            message = str(cause)
        err.print(f"[bold red]{title}:[/] {escape(message)}", soft_wrap=True)  # messages quote [commcare] etc.
        raise typer.Exit(code) from None


STOP_GRACE_SECONDS = 10.0  # after Ctrl-C or SIGTERM, the longest a run may take to stop on its own


def _stop(signum: int, frame: object) -> None:
    """Ctrl-C or a scheduler's SIGTERM: stop as KeyboardInterrupt does (failing_as says so and leaves at once),
    with a watchdog behind it. Python drops an exception raised where it cannot propagate (a finaliser, a
    callback), and a run still waiting on Moodle would then wait out its request timeout; the watchdog ends the
    process after STOP_GRACE_SECONDS whatever the main thread is doing. Nothing half-done is kept either way."""
    watchdog = threading.Timer(STOP_GRACE_SECONDS, _force_exit, (signum,))
    watchdog.daemon = True
    watchdog.start()
    raise KeyboardInterrupt(f"signal {signum}")


def _force_exit(signum: int) -> None:
    os.write(2, f"Stopped by signal {signum}: interrupted. Nothing half-done is kept: the next run carries on.\n"
                .encode())
    os._exit(ExitCode.INTERRUPTED)


def _warehouse(option: Optional[str]) -> Warehouse:
    """The warehouse the option (or the setting) names; a destination this version cannot use is a settings error."""
    with failing_as("Warehouse setting"):
        return Warehouse.of(option)
    raise AssertionError("unreachable: failing_as exits")


VAR_OPTION = typer.Option(
    None, "--var", help="dbt var as NAME=VALUE (VALUE in JSON for numbers and lists), e.g. commcare_default_owner_id=abc123 "
         "(repeatable).")
SKIP_CHECK_OPTION = typer.Option(False, "--skip-check", help="Do not run the pre-flight check first (see `check`).")


def _preflight(end: str, warehouse: Warehouse, **options: Any) -> None:
    """The check of one end before a stage talks to it: a FAIL stops the stage before anything is sent, with the
    table saying what to fix (exit code of that end, or SETTINGS when the settings themselves are wrong); WARNs are
    shown and the stage goes on."""
    from .check import MOODLE, CheckReport, check_commcare_end, check_moodle_end
    from .report import print_check

    if warehouse.lock_holder() is not None:
        return  # another run holds the warehouse: the stage says so at once, without asking anyone first
    with failing_as("Moodle extract failed" if end == MOODLE else "CommCare export failed"):
        _settings_of(end, options)  # settings that cannot be read fail as the stage itself would, in one line
    report = CheckReport()
    with failing_as("Pre-flight check failed"), console.status(f"Checking {end.title()}…"):
        if end == MOODLE:
            check_moodle_end(report, **options)
        else:
            check_commcare_end(report, warehouse, **options)
    if not report.problems():
        return
    print_check(err, report, only_problems=True)
    if report.failed():
        settings = any(f.status.value == "FAIL" and f.check.endswith(".settings") for f in report.findings)
        code = ExitCode.SETTINGS if settings else ExitCode.MOODLE if end == MOODLE else ExitCode.COMMCARE
        err.print(f"[bold red]Stopped before {'extracting' if end == MOODLE else 'uploading'}:[/] fix what the table "
                  "says, then run again (`moodle-commcare check` checks both ends; --skip-check skips this).")
        raise typer.Exit(code)


def _settings_of(end: str, options: Dict[str, Any]) -> Any:
    if end == "moodle":
        from pipelines.moodle.config import MoodleSettings

        return MoodleSettings.from_dlt(**options)
    from exports.commcare import CommCareSettings

    return CommCareSettings.from_dlt(**options)


def _extract(warehouse: Warehouse, skip_check: bool = False, **options) -> None:  # type: ignore[no-untyped-def]
    from .report import print_extract

    if not skip_check:
        _preflight("moodle", warehouse, **{k: v for k, v in options.items() if k != "full_refresh"})
    with failing_as("Moodle extract failed", where=f"the warehouse ({warehouse.path.parent})"):
        with console.status("Extracting from Moodle…") as status:
            report = run_extract(warehouse, on_progress=_progress(status), **options)
    print_extract(console, report)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log warnings and retries.")) -> None:
    """Keep CommCare case records in step with Moodle."""
    if not verbose:  # dlt logs a failing load job's traceback; the one line this command ends with says it all
        os.environ.setdefault("RUNTIME__LOG_LEVEL", "CRITICAL")
    if threading.current_thread() is threading.main_thread():  # signals can only be caught there
        for stop in (signal.SIGINT, signal.SIGTERM):  # a scheduler's stop ends a run as Ctrl-C does (failing_as)
            signal.signal(stop, _stop)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def extract(
    warehouse: Optional[str] = WAREHOUSE_OPTION,
    full_refresh: bool = typer.Option(False, "--full-refresh", help="Re-fetch grades, completion and contents everywhere."),
    course_id: Optional[List[int]] = typer.Option(None, "--course-id", help="Limit to these courses (repeatable)."),
    skip_check: bool = SKIP_CHECK_OPTION,
) -> None:
    """Load the configured Moodle site (.dlt/config.toml, .dlt/secrets.toml, SOURCES__MOODLE__*) into the warehouse."""
    options: Dict[str, Any] = {"full_refresh": True} if full_refresh else {}
    if course_id:
        options["course_ids"] = course_id
    _extract(_warehouse(warehouse), skip_check=skip_check, **options)


def _transform(warehouse: Warehouse, dbt_vars: Optional[dict] = None, quiet: bool = False,
               accept_site_move: bool = False) -> None:
    from .report import print_cases
    from .transform import case_summary, run_transform

    with failing_as("Transform failed"):
        report = run_transform(warehouse, dbt_vars=dbt_vars, quiet=quiet, accept_site_move=accept_site_move)
        print_cases(console, report, case_summary(warehouse))


@app.command()
def transform(
    warehouse: Optional[str] = WAREHOUSE_OPTION,
    var: Optional[List[str]] = VAR_OPTION,
    accept_site_move: bool = typer.Option(False, "--accept-site-move",
                                          help="The Moodle site moved to a new address: keep its site key (and cases)."),
) -> None:
    """Build the CommCare case tables with dbt (seeds, models, unit and data tests)."""
    _transform(_warehouse(warehouse), _dbt_vars(var), accept_site_move=accept_site_move)


def _dbt_vars(items: Optional[List[str]]) -> Dict[str, Any]:
    dbt_vars = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            err.print(f"[bold red]--var {escape(repr(item))}:[/] write it as NAME=VALUE")
            raise typer.Exit(ExitCode.SETTINGS)
        dbt_vars[name.strip()] = _var_value(value)
    return dbt_vars


def _var_value(text: str) -> object:
    """A number, true/false, a list or an object when the text is one in JSON (`--var engagement_active_days=10`,
    `--var 'commcare_owner_map=[{"scope": "course", ...}]'`); any other text as it is (a date, an owner id)."""
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def _export(warehouse: Warehouse, upload: bool, dry_run: bool, full: bool, allow_mass_change: bool = False,
             skip_check: bool = False, **settings) -> None:  # type: ignore[no-untyped-def]
    from exports.commcare import CommCareSettings, run_export

    from .report import print_export

    if upload and not dry_run and not skip_check:
        _preflight("commcare", warehouse, **{k: v for k, v in settings.items() if k != "out_dir"})
    config = None

    def where() -> str:
        folder = config.out_dir.resolve() if config is not None else "COMMCARE__OUT_DIR"
        return f"the warehouse ({warehouse.path.parent}) or the workbook folder ({folder})"

    with failing_as("CommCare export failed", where=where):
        config = CommCareSettings.from_dlt(**settings)
        with console.status("Exporting to CommCare…") as status:
            report = run_export(warehouse, config, upload=upload, dry_run=dry_run, full=full,
                                allow_mass_change=allow_mass_change, on_progress=lambda msg: status.update(msg))
    print_export(console, report)
    if any(t.failed for t in report.types):
        raise typer.Exit(ExitCode.ROWS_REJECTED)


@app.command()
def export(
    warehouse: Optional[str] = WAREHOUSE_OPTION,
    upload: bool = typer.Option(False, "--upload", help="Upload to CommCare's bulk case import ([commcare] settings)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be sent; write and send nothing."),
    full: bool = typer.Option(False, "--full", help="Send every case again, changed or not."),
    allow_mass_change: bool = typer.Option(
        False, "--allow-mass-change",
        help="Go ahead although the export would close or update more open cases than the safety thresholds allow."),
    out: Optional[Path] = typer.Option(None, help="Folder for the workbooks (default exports/out)."),
    skip_check: bool = SKIP_CHECK_OPTION,
) -> None:
    """Write changed cases as bulk-import workbooks (always) and upload them (--upload)."""
    _export(_warehouse(warehouse), upload, dry_run, full, allow_mass_change, skip_check, out_dir=out)


@app.command()
def check(
    warehouse: Optional[str] = WAREHOUSE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON (for scripts and monitoring)."),
    moodle_only: bool = typer.Option(False, "--moodle", help="Check Moodle only."),
    commcare_only: bool = typer.Option(False, "--commcare", help="Check CommCare only."),
) -> None:
    """Before the first run: what in Moodle's and CommCare's set-up would make a run stop or lose data, and exactly
    where to fix it. Reads only; a few dozen requests. Exit code 0 all OK, 1 warnings, 2 failures."""
    import json

    from .check import CheckReport, check_commcare_end, check_moodle_end
    from .report import print_check

    wh = _warehouse(warehouse)
    report = CheckReport()
    with failing_as("Check failed"):
        with console.status("Checking…") if not as_json else ExitStack():
            if not commcare_only:
                check_moodle_end(report)
            if not moodle_only:
                check_commcare_end(report, wh)
    if as_json:
        console.file.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        print_check(console, report)
    raise typer.Exit(report.exit_code)


@app.command()
def sync(
    warehouse: Optional[str] = WAREHOUSE_OPTION,
    full_refresh: bool = typer.Option(False, "--full-refresh", help="Re-fetch grades, completion and contents everywhere "
                                                                     "(weekly: changes no access reveals)."),
    wait: float = typer.Option(0.0, "--wait", metavar="SECONDS",
                               help="Wait up to this long for another run on the warehouse to end (default: refuse "
                                    "at once, exit 6)."),
    var: Optional[List[str]] = VAR_OPTION,
    skip_check: bool = SKIP_CHECK_OPTION,
    publish: bool = typer.Option(True, "--publish/--no-publish",
                                 help="After a good run, publish the analysts' read-only copy (<warehouse>.analysts.duckdb)."),
) -> None:
    """Extract, transform and export --upload as one run, for a scheduler: one lock, one summary, one run-log record,
    one exit code (0 done, 10 done with warnings; 4, 5, 6, 130 retry later; others need a person), and a
    notification when configured (MOODLE_COMMCARE_NOTIFY_COMMAND / _URL)."""
    from .jsonlog import json_log, log_file
    from .notify import notify
    from .report import print_sync
    from .runlock import RunLocked
    from .sync import new_run_id, run_sync

    wh = _warehouse(warehouse)
    dbt_vars = _dbt_vars(var)
    run_id = new_run_id()
    held = ExitStack()
    try:
        held.enter_context(wh.run_lock("sync", wait=wait))
    except RunLocked as refused:  # another run holds the warehouse: retry later, and say so to whoever is told
        for problem in notify({"run_id": run_id, "full_refresh": full_refresh, "failed_stage": "lock",
                               "error": str(refused)}, ExitCode.BUSY):
            err.print(f"[yellow]Notification:[/] {escape(problem)}")
        err.print(f"[bold red]Sync:[/] {escape(str(refused))}", soft_wrap=True)
        raise typer.Exit(ExitCode.BUSY) from None
    began = utcnow()
    with held, json_log(log_file(wh.path), run_id) as logged:
        logging.getLogger("moodle_commcare.sync").info("sync %s started (full refresh: %s)", run_id, full_refresh)
        with failing_as("Sync"), console.status("Sync…") as status:
            report = run_sync(wh, run_id=run_id, full_refresh=full_refresh, skip_check=skip_check, publish=publish,
                              dbt_vars=dbt_vars, on_progress=lambda msg: status.update(msg))
        summary = {**report.summary(), "log_file": str(logged)}
        ok = report.exit_code in (ExitCode.OK, ExitCode.WARNINGS)
        with failing_as("Sync"):  # the run is done; a run log that cannot be written (a full disk) is said in a line
            (wh.record if ok else wh.record_failure)("sync", "ok" if ok else "failed", began, summary)
        logging.getLogger("moodle_commcare.sync").log(logging.INFO if ok else logging.ERROR,
                                                      "sync %s ended with exit code %d", run_id, report.exit_code,
                                                      extra={"summary": summary})
    print_sync(console, report)
    for problem in notify(summary, report.exit_code):
        err.print(f"[yellow]Notification:[/] {escape(problem)}")
    if report.error:
        err.print(f"[bold red]Sync stopped at {report.failed_stage}:[/] {escape(report.error)}", soft_wrap=True)
    raise typer.Exit(report.exit_code)


SCHEDULE_ENV = "MOODLE_COMMCARE_SCHEDULE"  # the cron expression the scheduler runs sync on, for `status`


def _next_due() -> Any:
    """When the next sync is due, from MOODLE_COMMCARE_SCHEDULE (a cron expression, in UTC); None without one."""
    from datetime import datetime, timezone

    from croniter import croniter  # type: ignore[import-untyped]

    expression = os.environ.get(SCHEDULE_ENV, "").strip()
    if not expression:
        return None
    if not croniter.is_valid(expression):
        err.print(f"[yellow]{SCHEDULE_ENV}={escape(repr(expression))} is not a cron expression[/] (e.g. '15 2 * * *').")
        return None
    return croniter(expression, datetime.now(timezone.utc)).get_next(datetime)


WEBHOOK_TOKEN_ENV = "MOODLE_COMMCARE_WEBHOOK_TOKEN"  # the local_webhooks service's token (a secret)
WEBHOOK_ALLOW_ENV = "MOODLE_COMMCARE_WEBHOOK_ALLOW_IPS"  # Moodle's address(es), comma-separated; CIDRs allowed


@app.command("serve-webhooks")
def serve_webhooks(
    warehouse: Optional[str] = WAREHOUSE_OPTION,
    host: str = typer.Option("127.0.0.1", help="Address to listen on (put a TLS reverse proxy in front: README)."),
    port: int = typer.Option(8090, help="Port to listen on."),
    window: float = typer.Option(15.0, metavar="SECONDS",
                                 help="The first pending event opens a window this long; then one targeted sync takes "
                                      "every event pending."),
    var: Optional[List[str]] = VAR_OPTION,
) -> None:
    """Receive Moodle's events (the local_webhooks plugin) and sync what they name within a minute: each event is
    stored before it is answered, then micro-batches re-read only the courses and students the events name, under
    the same run lock as `sync`. Token: MOODLE_COMMCARE_WEBHOOK_TOKEN; allowed senders: MOODLE_COMMCARE_WEBHOOK_ALLOW_IPS."""
    from .webhook_batcher import MicroBatcher
    from .webhook_events import is_relevant
    from .webhook_server import serve
    from .webhook_store import EventStore, events_path

    token = os.environ.get(WEBHOOK_TOKEN_ENV, "")
    if len(token.strip()) < 16:
        err.print(f"[bold red]{WEBHOOK_TOKEN_ENV}[/] must hold the token of the local_webhooks service, at least 16 "
                  "characters (e.g. `openssl rand -hex 24`): events without it are refused.")
        raise typer.Exit(ExitCode.SETTINGS)
    allow = [a.strip() for a in os.environ.get(WEBHOOK_ALLOW_ENV, "").split(",") if a.strip()]
    wh = _warehouse(warehouse)
    store = EventStore(events_path(wh.path))
    batcher = MicroBatcher(wh, store, window=window, dbt_vars=_dbt_vars(var))
    stop = threading.Event()
    worker = threading.Thread(target=batcher.run_forever, args=(stop,), name="webhook-batches", daemon=True)
    worker.start()
    console.print(f"Receiving Moodle events at http://{host}:{port}/ into {events_path(wh.path)}; targeted syncs of "
                  f"{wh} after a {window:g} s window. Ctrl-C stops.")
    try:
        serve(store, token.strip(), host, port, is_relevant=is_relevant, allow_ips=allow)
    finally:
        stop.set()


@app.command("moodle-role")
def moodle_role(
    login: bool = typer.Option(False, "--login", help="Also allow what a username + password login needs "
                                                      "(moodle/webservice:createtoken)."),
) -> None:
    """Print the connector's Moodle role as a role preset file: save it, then in Moodle upload it on Site
    administration > Users > Permissions > Define roles > Add a new role, and assign the role at system level."""
    from pipelines.moodle.preflight import role_preset

    console.file.write(role_preset(login=login))


@app.command()
def status(
    warehouse: Optional[str] = WAREHOUSE_OPTION,
) -> None:
    """The last extract, transform and export, with their counts."""
    from . import markers
    from .report import print_recent_syncs, print_status

    wh = _warehouse(warehouse)
    with failing_as("Status unavailable"):
        running = wh.lock_holder()
        if running is not None:
            console.print(f"Running now: {running.get('stage', 'a run')} (process {running.get('pid')} on "
                          f"{running.get('host')}, since {running.get('started_at')}).")
        runs = wh.last_runs()
        fences = {stage: wh.marker(table) for stage, table in
                  (("extract", markers.EXTRACT_LOAD), ("transform", markers.TRANSFORM_BUILD))}
        syncs = wh.recent_runs("sync")
    if not runs:
        console.print(f"Nothing has run against {wh} yet: start with `moodle-commcare check`, then `sync` (or "
                      "`extract`).")
        return
    print_status(console, wh, runs)
    next_due = _next_due()
    if syncs or next_due is not None:
        print_recent_syncs(console, syncs, next_due)
    if running is None and fences["extract"] == "loading":
        err.print("[bold yellow]The last extract stopped while loading:[/] transform waits until "
                  "`moodle-commcare extract` has finished that load.")
    if running is None and fences["transform"] in ("building", "failed"):
        err.print(f"[bold yellow]The last transform {'failed' if fences['transform'] == 'failed' else 'stopped'}:[/] "
                  "export waits until `moodle-commcare transform` has passed.")


@app.command("migrate-warehouse")
def migrate_warehouse(
    to: str = typer.Option(..., "--to", metavar="WAREHOUSE",
                           help="The new warehouse: postgresql://USER@HOST:PORT/DATABASE (an empty database), or a "
                                "DuckDB file."),
    warehouse: Optional[str] = WAREHOUSE_OPTION,
) -> None:
    """Move to another warehouse: copy what only the warehouse knows (the site key, the export's ledger and job
    journal, the run log); Moodle's data is then read again by `extract --full-refresh` into the new one."""
    from rich.table import Table

    from .migrate import MigrationRefused, migrate

    old, new = _warehouse(warehouse), _warehouse(to)
    with failing_as("Migration refused", where=lambda: f"{old} or {new}"):
        try:
            report = migrate(old, new)
        except MigrationRefused as exc:
            err.print(f"[bold red]Migration refused:[/] {exc}")
            raise typer.Exit(ExitCode.NOT_READY) from None
    table = Table(title=f"Copied from {old} to {new}", title_justify="left")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for relation, rows in report.copied.items():
        table.add_row(relation, f"{rows:,}")
    for relation in report.skipped:
        table.add_row(relation, "(none yet in the old warehouse)")
    console.print(table)
    console.print(f"Next: `moodle-commcare extract --full-refresh --warehouse {new}`, then `transform` and `export "
                  f"--upload` with it (only real changes go out), then set MOODLE_COMMCARE_WAREHOUSE={new} for the "
                  "scheduled runs. Keep the old warehouse until then.")


@app.command()
def demo(
    warehouse: str = typer.Option("moodle.duckdb", "--warehouse", "--duckdb", metavar="WAREHOUSE",
                                  help="The warehouse to load into: a DuckDB file, or postgresql://USER@HOST:PORT/DB; "
                                       "--duckdb is its former name."),
    students: int = typer.Option(150, help="Students in the generated demo school."),
    courses: int = typer.Option(12, help="Courses in the generated demo school."),
) -> None:
    """The whole job against the bundled emulators: extract a demo school, build the case tables, export them."""
    import time

    # the school's access times lie in the days before now, so engagement reads as it would today
    from emulators.commcare import CommCareEmulator
    from emulators.moodle import MoodleEmulator, SchoolSpec

    spec = SchoolSpec(students=students, courses=courses, now=int(time.time()))
    from . import demo as demo_settings

    held = ExitStack()
    with failing_as("Demo failed"):  # one lock for the three stages: no other run slips in between them
        wh = Warehouse.of(warehouse)
        held.enter_context(wh.run_lock("demo"))
    with held, MoodleEmulator(spec=spec) as moodle, CommCareEmulator(owners=demo_settings.OWNERS) as hq:
        # three students have a CommCare app of their own: their courses and grades go to their phones too
        phones = demo_settings.student_phones(moodle.school)
        hq.owners |= set(phones.values())
        dbt_vars = demo_settings.dbt_vars(commcare_student_workers=[
            {"moodle_username": moodle.school.users[uid].username, "commcare_user_id": worker}
            for uid, worker in phones.items()])
        moodle_settings: Dict[str, Any] = dict(base_url=moodle.base_url, token=moodle.token, allow_insecure_http=True)
        commcare_settings: Dict[str, Any] = dict(base_url=hq.base_url, project=hq.domain, username=hq.username,
                                                 api_key=hq.api_key, allow_insecure_http=True)
        console.rule("0. Check: is each end set up as the connector needs?")
        _check_both(wh, moodle_settings, commcare_settings, owner_ids=demo_settings.OWNERS,
                    student_workers=set(phones.values()))
        console.rule(f"1. Extract: Moodle emulator → {wh.engine}")
        console.print(f"Moodle emulator serving a demo school at {moodle.base_url}")
        _extract(wh, skip_check=True, **moodle_settings)
        console.rule("2. Transform: dbt → CommCare case tables")
        _transform(wh, dbt_vars, quiet=True)
        console.rule("3. Export: changed cases → CommCare emulator's bulk case import")
        console.print(f"CommCare emulator (project {hq.domain}) at {hq.base_url}")
        _forget_commcare(wh)  # this CommCare emulator starts empty: so do the ledger and the job journal
        _export(wh, upload=True, dry_run=False, full=False, skip_check=True, poll_interval=0.2, **commcare_settings)
        uid, worker = next(iter(phones.items()))
        from .report import print_phone
        print_phone(console, hq.phone_cases(worker), f"What student {uid}'s own phone holds offline (mobile worker "
                    f"{worker}; the CommCare emulator's restore rules)")
        console.rule("4. A teacher grades in Moodle: the event updates the case (serve-webhooks)")
        with failing_as("Demo failed"):
            _demo_event(wh, moodle, hq, moodle_settings, {**commcare_settings, "poll_interval": 0.2}, dbt_vars)


def _demo_event(warehouse: Warehouse, moodle: Any, hq: Any, moodle_settings: Dict[str, Any],
                commcare_settings: Dict[str, Any], dbt_vars: Dict[str, Any]) -> None:
    """The receiver in this process, the emulator posting as local_webhooks does: one grade, one event, one batch."""
    import secrets
    import socket
    import time

    import uvicorn
    from rich.table import Table

    from emulators.moodle.webhooks import WebhookService

    from .webhook_batcher import MicroBatcher
    from .webhook_events import KINDS, is_relevant
    from .webhook_server import make_app, uvicorn_config
    from .webhook_store import EventStore, events_path

    token = secrets.token_hex(16)
    store = EventStore(events_path(warehouse.path))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn_config(make_app(store, token, is_relevant=is_relevant), "127.0.0.1",
                                           sock.getsockname()[1]))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    try:
        while not server.started:
            time.sleep(0.02)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        sender = moodle.add_webhook(WebhookService(url, token, events={"\\" + name for name in KINDS}))
        school = moodle.school
        course = next(c for c in sorted(school.enrolments) if any(i.itemtype == "mod" for i in school.grade_items[c])
                      and school.students_of(c, True))
        student = school.students_of(course, True)[0]
        item = next(i for i in school.grade_items[course] if i.itemtype == "mod")
        with warehouse.connect(read_only=True) as con:
            found = con.execute(f"select external_id from {warehouse.mart('commcare_enrolment_cases')} "
                                "where moodle_user_id = ? and moodle_course_id = ?", [student, course]).fetchone()
        case_id = found[0] if found else None

        def grades() -> str:
            case = hq.by_external_id("course_enrolment").get(case_id)
            return case.properties.get("grade_summary", "") if case else "(no case)"

        was = grades()
        console.print(f"A teacher gives student {student} {item.grademax:g}/{item.grademax:g} for grade item {item.id} "
                      f"in course {course}, in Moodle's gradebook.")
        school.set_grade(course, student, item.id, item.grademax, via="web")
        sender.flush(10)
        names = ", ".join(sorted({d.eventname for d in sender.deliveries}))
        console.print(f"Moodle sent {len(sender.deliveries)} event(s) ({names}); the receiver stored "
                      f"{store.counts().get('pending', 0)}.")
        batch = MicroBatcher(warehouse, store, window=0, dbt_vars=dbt_vars, moodle_options=moodle_settings,
                             commcare_options=commcare_settings).run_once()
        table = Table(title=f"Case {case_id} in CommCare", title_justify="left")
        for column in ("", "grade_summary"):
            table.add_column(column)
        table.add_row("before", was)
        table.add_row("after", grades())
        if batch is not None:
            table.caption = (f"one batch: {batch.events} event(s), courses {batch.courses}, {batch.requests} Moodle "
                             f"requests, {batch.sent} case(s) sent, {batch.seconds:.1f} s (exit {batch.exit_code})")
            table.caption_justify = "left"
        console.print(table)
    finally:
        server.should_exit = True
        store.close()


def _check_both(warehouse: Warehouse, moodle_settings: Dict[str, Any], commcare_settings: Dict[str, Any],
                owner_ids: Any, student_workers: Any = None) -> None:
    from .check import CheckReport, check_commcare_end, check_moodle_end
    from .report import print_check

    report = CheckReport()
    with failing_as("Check failed"), console.status("Checking…"):
        check_moodle_end(report, **moodle_settings)
        check_commcare_end(report, warehouse, owner_ids=owner_ids, student_workers=student_workers,
                           **commcare_settings)
    print_check(console, report)


def _forget_commcare(warehouse: Warehouse) -> None:
    from exports.commcare.ledger import SCHEMA
    if warehouse.exists():
        con = warehouse.connect()
        try:
            con.execute(f"drop schema if exists {SCHEMA} cascade")
        finally:
            con.close()


@app.command()
def emulator(
    port: int = typer.Option(8081, help="Port on 127.0.0.1."),
    students: int = typer.Option(150, help="Students in the generated school."),
    courses: int = typer.Option(12, help="Courses in the generated school."),
    latency: float = typer.Option(0.0, help="Seconds added to every answer."),
    profile: str = typer.Option("integration", help="Who the token acts as: admin, manager, integration, declared, teacher."),
    moodle_version: str = typer.Option("4.5", help="Which Moodle the emulator answers as: 4.1 or 4.5."),
    batch_function: bool = typer.Option(False, "--batch-function",
                                        help="The service includes tool_mobile_call_external_functions (batched calls)."),
    participants_report: bool = typer.Option(False, "--participants-report",
                                             help="An admin has built the README's participants report (Moodle 4.1+)."),
) -> None:
    """Serve the Moodle emulator until Ctrl-C, to try the connector by hand."""
    from emulators import serve_until_interrupted
    from emulators.moodle import MoodleEmulator, SchoolSpec
    from emulators.moodle.site import VERSIONS, SiteConfig

    if moodle_version not in VERSIONS:
        err.print(f"[bold red]--moodle-version {escape(repr(moodle_version))}:[/] choose one of {', '.join(sorted(VERSIONS))}")
        raise typer.Exit(ExitCode.SETTINGS)
    try:
        server = MoodleEmulator(spec=SchoolSpec(students=students, courses=courses), latency=latency, port=port,
                                profile=profile, site=SiteConfig.recommended(version=moodle_version),
                                batch_function=batch_function)
    except ValueError as exc:
        err.print(f"[bold red]--profile {escape(repr(profile))}:[/] {escape(str(exc))}")
        raise typer.Exit(ExitCode.SETTINGS) from None
    with server as moodle:
        console.print(f"Moodle {moodle_version} emulator at {moodle.base_url}, token of the {profile} profile: "
                      f"{moodle.token} (demo only)")
        report = ""
        if participants_report:
            from emulators.moodle.reports import RECOMMENDED

            report_id = moodle.add_report(**RECOMMENDED, audience=[moodle.school.service_users[profile]])
            report = f" SOURCES__MOODLE__PARTICIPANTS_REPORT_ID={report_id}"
        console.print(f"  export SOURCES__MOODLE__BASE_URL={moodle.base_url} SOURCES__MOODLE__CREDENTIALS__TOKEN=<token> "
                      f"SOURCES__MOODLE__ALLOW_INSECURE_HTTP=true{report}")
        serve_until_interrupted()


if __name__ == "__main__":
    app()
