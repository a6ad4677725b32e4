"""The export brings the CommCare emulator in step with the marts, sends only changes and never loses a case."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from openpyxl import load_workbook

from emulators.commcare import CommCareEmulator
from emulators.moodle import MoodleEmulator
from exports.commcare import run_export
from exports.commcare.errors import CommCareAuthError, CommCareJobFailed, CommCareMassChange
from exports.commcare.ledger import HEADER_RE
from moodle_commcare.transform import run_transform

from .conftest import SMALL, Warehouse
from .export_support import assert_store_matches_marts, mart, settings, spawn_export
from .oracle import VARS


def test_export_makes_commcare_equal_the_marts(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    report = run_export(db, settings(hq, tmp_path), upload=True)
    assert_store_matches_marts(hq, db)
    by_type = {t.case_type: t for t in report.types}
    assert by_type["student"].created == len(hq.by_external_id("student"))
    assert by_type["course_enrolment"].failed == 0
    assert [u["case_type"] for u in hq.uploads] == ["student", "course_enrolment"], "parents first"


def test_second_export_sends_nothing(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    run_export(db, settings(hq, tmp_path), upload=True)
    uploads = hq.requests["upload"]
    again = run_export(db, settings(hq, tmp_path), upload=True)
    assert hq.requests["upload"] == uploads
    assert all(t.to_send == 0 and not t.files for t in again.types)


def test_full_resends_everything_without_duplicates(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    run_export(db, settings(hq, tmp_path), upload=True)
    count = len(hq.cases)
    again = run_export(db, settings(hq, tmp_path), upload=True, full=True)
    assert sum(t.updated for t in again.types) == count
    assert len(hq.cases) == count


def test_dropping_a_column_resends_nothing(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    run_export(db, settings(hq, tmp_path), upload=True)
    with duckdb.connect(str(db)) as con:
        con.execute("alter table commcare.commcare_student_cases drop column city")
    again = run_export(db, settings(hq, tmp_path), upload=True, dry_run=True)
    assert all(t.to_send == 0 for t in again.types)


def test_dry_run_counts_and_touches_nothing(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    report = run_export(db, settings(hq, tmp_path), upload=True, dry_run=True)
    students = mart(db, "commcare_student_cases")
    planned = {t.case_type: t.planned for t in report.types}
    assert planned["student"]["create"] == sum(1 for r in students.values() if r["close"] is None)
    assert planned["student"].get("skip_closed", 0) == sum(1 for r in students.values() if r["close"] == "yes")
    assert report.types[0].examples
    assert hq.requests["upload"] == 0 and not (tmp_path / "out").exists()
    with duckdb.connect(str(db)) as con:
        assert con.execute("select count(*) from commcare_export.case_ledger").fetchone()[0] == 0


def test_workbooks_are_text_only_with_valid_headers(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    with duckdb.connect(str(db)) as con:  # what people type: formulas, leading zeros, numbers
        con.execute("update commcare.commcare_student_cases set first_name = '=HYPERLINK(\"http://x\")', "
                    "moodle_idnumber = '0042' where moodle_user_id = "
                    "(select min(moodle_user_id) from commcare.commcare_student_cases)")
    report = run_export(db, settings(hq, tmp_path), upload=False)
    student_file = report.types[0].files[0]
    book = load_workbook(student_file, read_only=False)
    sheet = book.worksheets[0]
    assert sheet.title == "moodle cases" and " " in sheet.title, "never a case type"
    headers = [c.value for c in sheet[1]]
    assert headers[:3] == ["external_id", "name", "owner_id"] and headers[-1] == "close"
    assert all(HEADER_RE.match(h) and h not in ("type", "closed", "parent_ref") for h in headers)
    cells = [c for row in sheet.iter_rows(min_row=2) for c in row if c.value is not None]
    assert cells and all(c.data_type == "s" and isinstance(c.value, str) for c in cells)
    values = {c.value for c in cells}
    assert '=HYPERLINK("http://x")' in values and "0042" in values
    assert not any(v.endswith(".0") and v[:-2].isdigit() for v in values), "integers without .0"
    enrolment_headers = [c.value for c in load_workbook(report.types[1].files[0]).worksheets[0][1]]
    assert enrolment_headers[:5] == ["external_id", "name", "owner_id", "parent_external_id", "parent_type"]
    assert hq.requests["upload"] == 0, "without --upload nothing is sent"


def test_rejected_rows_stay_pending_and_go_through_once_fixed(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.owners.discard("demo-group-biology")  # CommCare does not know this owner yet
    first = run_export(db, settings(hq, tmp_path), upload=True)
    students, enrolments = mart(db, "commcare_student_cases"), mart(db, "commcare_enrolment_cases")
    bad_students = {e for e, r in students.items() if r["owner_id"] == "demo-group-biology" and r["close"] is None}
    bad_enrolments = {e for e, r in enrolments.items() if r["close"] is None and (
        r["owner_id"] == "demo-group-biology" or r["parent_external_id"] in bad_students)}
    assert bad_students and set(first.types[0].errors) == bad_students
    assert all(e.startswith("Invalid Owner") for e in first.types[0].errors.values())
    assert first.types[1].failed == len(bad_enrolments) and set(first.types[1].errors) <= bad_enrolments
    assert {e.split(" (")[0] for e in first.types[1].errors.values()} <= {"Invalid Owner", "Invalid Parent ID"}
    with duckdb.connect(str(db)) as con:
        pending = {r[0] for r in con.execute(
            "select external_id from commcare_export.case_ledger where hashes is null and last_error is not null").fetchall()}
    assert pending == bad_students | bad_enrolments
    again = run_export(db, settings(hq, tmp_path), upload=True, dry_run=True)
    assert (again.types[0].planned["create"], again.types[1].planned["create"]) == (len(bad_students), len(bad_enrolments))
    hq.owners.add("demo-group-biology")
    second = run_export(db, settings(hq, tmp_path), upload=True)
    assert (second.types[0].created, second.types[1].created) == (len(bad_students), len(bad_enrolments))
    assert second.types[0].failed == second.types[1].failed == 0
    assert_store_matches_marts(hq, db)


def test_failed_job_keeps_rows_pending(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.fail_next_job = "Error: the file has expired"
    report = run_export(db, settings(hq, tmp_path), upload=True)
    assert report.types[0].failed == report.types[0].to_send > 0
    again = run_export(db, settings(hq, tmp_path), upload=True)
    assert again.types[0].created == report.types[0].to_send
    assert_store_matches_marts(hq, db)


def test_retries_429_and_5xx_then_succeeds(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.upload_faults = [(429, 1)]  # 429 proves no job was queued: the only upload answer safe to retry
    hq.status_faults = [(429, None), (502, None)]
    run_export(db, settings(hq, tmp_path), upload=True)
    assert_store_matches_marts(hq, db)


def test_bad_api_key_stops_at_once(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    with pytest.raises(CommCareAuthError) as caught:
        run_export(db, settings(hq, tmp_path, api_key="wrong-key-123"), upload=True)
    assert "COMMCARE__API_KEY" in str(caught.value) and "wrong-key-123" not in str(caught.value)
    assert hq.requests["upload"] == 1, "401 is not retried"


def test_job_slower_than_the_poll_timeout_is_settled_next_run_not_resent(db: Path, hq: CommCareEmulator,
                                                                        tmp_path: Path) -> None:
    hq.hold_jobs()  # CommCare's import queue is backed up
    with pytest.raises(CommCareJobFailed, match="nothing is lost"):
        run_export(db, settings(hq, tmp_path, poll_timeout=0.3), upload=True)
    with duckdb.connect(str(db)) as con:
        assert con.execute("select count(*) from commcare_export.case_ledger where hashes is not null").fetchone()[0] == 0
    stuck = run_export(db, settings(hq, tmp_path, poll_timeout=0.3), upload=True)  # still queued: nothing resent
    assert stuck.settle.still_open == 1 and stuck.types[0].planned.get("withheld", 0) == stuck.types[0].planned.get(
        "withheld", -1) > 0 and stuck.types[0].to_send == 0
    assert hq.requests["upload"] == 1
    hq.release_jobs()
    final = run_export(db, settings(hq, tmp_path), upload=True)
    assert final.settle.settled == 1 and final.types[0].to_send == 0, "the first job's result is read, not re-sent"
    assert [u["case_type"] for u in hq.uploads] == ["student", "course_enrolment"]
    assert_store_matches_marts(hq, db)


def test_crash_between_upload_and_ledger_write_loses_nothing(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    """The export process is killed after CommCare applied a job but before it heard back."""
    proc = spawn_export(db, hq, tmp_path)

    def crash(job: Any) -> None:
        if job.case_type == "course_enrolment":
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    hq.before_success_status = crash
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()[-3000:]  # type: ignore[union-attr]
    applied = len(hq.by_external_id("course_enrolment"))
    assert applied > 0, "CommCare applied the enrolment job before the crash"
    with duckdb.connect(str(db)) as con:
        known = con.execute("select case_type, count(*) from commcare_export.case_ledger "
                            "where hashes is not null group by 1").fetchall()
    assert dict(known).get("course_enrolment", 0) == 0, "the crash came before the ledger write"
    hq.before_success_status = None
    report = run_export(db, settings(hq, tmp_path), upload=True)
    assert report.types[0].to_send == 0, "students were recorded before the crash"
    assert report.settle.settled == 1 and report.types[1].to_send == 0, "the journal's job is read, not re-sent"
    assert hq.requests["upload"] == 2
    assert_store_matches_marts(hq, db)


def test_grade_change_reaches_exactly_one_enrolment_case(tmp_path: Path, hq: CommCareEmulator) -> None:
    with MoodleEmulator(spec=SMALL) as moodle:
        wh = Warehouse(moodle, tmp_path / "m.duckdb")
        wh.extract()
        run_transform(wh.path, VARS)
        run_export(wh.path, settings(hq, tmp_path), upload=True)
        s = moodle.school
        cid, uid = next((c, u) for c, u, e in s.all_enrolments()
                        if e.role == "student" and e.active and s.grade_items[c] and not s.users[u].suspended)
        item = next(i for i in s.grade_items[cid] if i.itemtype == "mod")
        s.set_grade(cid, uid, item.id, 1.25)
        wh.extract()
        run_transform(wh.path, VARS)
        report = run_export(wh.path, settings(hq, tmp_path), upload=True)
        assert (report.types[0].to_send, report.types[1].to_send) == (0, 1)
        assert report.types[1].updated == 1
        case = hq.by_external_id("course_enrolment")[f"moodle-moodle-demo-academy-example-e-{cid}-{uid}"]
        assert "1.25/" in case.properties["grade_summary"]
        assert_store_matches_marts(hq, wh.path)


def test_ledger_of_an_earlier_version_is_migrated(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    """A ledger written before the journal existed: accepted cases are in CommCare, the rest may be."""
    run_export(db, settings(hq, tmp_path), upload=True)
    with duckdb.connect(str(db)) as con:
        con.execute("drop table commcare_export.jobs; drop table commcare_export.job_rows")
        con.execute("alter table commcare_export.case_ledger drop column in_commcare")
        con.execute("alter table commcare_export.case_ledger drop column episode")
        rejected = con.execute("update commcare_export.case_ledger set hashes = null where external_id = "
                               "(select min(external_id) from commcare_export.case_ledger where case_type = 'student' "
                               "and not closed) returning external_id").fetchone()[0]
    report = run_export(db, settings(hq, tmp_path), upload=True)
    assert (report.types[0].planned.get("resend"), report.types[0].created) == (1, 0), "upserted, not duplicated"
    assert report.types[1].to_send == 0
    assert rejected in hq.by_external_id("student")
    assert_store_matches_marts(hq, db)


def test_hashes_of_an_older_duckdb_are_migrated_without_a_resend(db: Path, hq: CommCareEmulator,
                                                                 tmp_path: Path) -> None:
    """Ledgers before issue 12 held DuckDB hash() values, which a DuckDB upgrade may change (every case would
    then go out again). The first export of this version rewrites them as md5 digests, re-sending nothing."""
    from exports.commcare import ledger

    run_export(db, settings(hq, tmp_path), upload=True)
    with duckdb.connect(str(db)) as con:  # the ledger as the version before wrote it
        for table in ledger.CASE_TABLES:
            ledger.plan(con, table, 1000, scheme=ledger.LEGACY_SCHEME)
            con.execute(f"update commcare_export.case_ledger as l set hashes = p._hashes from "
                        f"{ledger.plan_table(table)} as p where l.case_type = '{table.case_type}' "
                        "and l.external_id = p.external_id and l.hashes is not null")
            ledger.drop_plan(con, table)
        con.execute("drop table commcare_export.ledger_meta")
        renamed = con.execute("update commcare.commcare_student_cases set name = name || ' (renamed)' where "
                              "external_id = (select min(external_id) from commcare.commcare_student_cases where "
                              "close is null) returning external_id").fetchone()[0]
    uploads = hq.requests["upload"]
    report = run_export(db, settings(hq, tmp_path), upload=True)
    assert [t.to_send for t in report.types] == [1, 0, 0, 0] and report.types[0].updated == 1, "only the renamed case"
    assert hq.requests["upload"] == uploads + 1
    with duckdb.connect(str(db)) as con:
        assert con.execute("select value from commcare_export.ledger_meta").fetchone()[0] == ledger.HASH_SCHEME
        digests = [v for (h,) in con.execute("select hashes from commcare_export.case_ledger where hashes is not "
                                             "null").fetchall() for v in json.loads(h).values() if v]
    assert digests and all(len(d) == 16 and int(d, 16) >= 0 for d in digests)
    assert hq.by_external_id("student")[renamed].name.endswith("(renamed)")
    assert run_export(db, settings(hq, tmp_path), upload=True).types[0].to_send == 0
    assert_store_matches_marts(hq, db)


def test_row_lists_of_old_jobs_are_pruned_and_the_jobs_kept(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    run_export(db, settings(hq, tmp_path), upload=True)
    with duckdb.connect(str(db)) as con:
        con.execute("update commcare_export.jobs set settled_at = settled_at - interval 31 days")
    run_export(db, settings(hq, tmp_path), upload=True)
    with duckdb.connect(str(db)) as con:
        assert con.execute("select count(*) from commcare_export.job_rows").fetchone()[0] == 0
        assert con.execute("select count(*), count(*) filter (where state = 'succeeded') "
                           "from commcare_export.jobs").fetchone() == (2, 2)


def test_mass_close_stops_before_anything_is_sent_until_allowed(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    """A half-loaded extract or a role that lost a capability reads as everyone leaving: CommCare cannot reopen."""
    run_export(db, settings(hq, tmp_path), upload=True)
    uploads = hq.requests["upload"]
    with duckdb.connect(str(db)) as con:
        con.execute("update commcare.commcare_enrolment_cases set close = 'yes'")
        before = con.execute("select * from commcare_export.case_ledger order by all").fetchall()
    with pytest.raises(CommCareMassChange, match=r"close \d+ of the \d+ open course_enrolment cases.*--allow-mass-change"):
        run_export(db, settings(hq, tmp_path), upload=True)
    assert hq.requests["upload"] == uploads and not any(c.closed for c in hq.cases.values())
    with duckdb.connect(str(db)) as con:
        assert con.execute("select * from commcare_export.case_ledger order by all").fetchall() == before
    preview = run_export(db, settings(hq, tmp_path), upload=True, dry_run=True)
    assert preview.refusal and preview.types[1].planned["close"] > 0, "a dry run shows what would happen"
    allowed = run_export(db, settings(hq, tmp_path), upload=True, allow_mass_change=True)
    assert allowed.types[1].closed == allowed.types[1].planned["close"]
    assert_store_matches_marts(hq, db)


def test_mass_update_stops_but_full_resend_is_a_choice(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    run_export(db, settings(hq, tmp_path), upload=True)
    with duckdb.connect(str(db)) as con:
        con.execute("update commcare.commcare_student_cases set city = 'Nowhere'")
    with pytest.raises(CommCareMassChange, match="update .* open student cases .*MAX_UPDATE_SHARE is 50%"):
        run_export(db, settings(hq, tmp_path), upload=True)
    report = run_export(db, settings(hq, tmp_path, max_update_share=1.0), upload=True)  # the threshold is a setting
    assert report.types[0].updated > 0
    assert run_export(db, settings(hq, tmp_path), upload=True, full=True).refusal is None, "--full is a choice"
    assert_store_matches_marts(hq, db)
