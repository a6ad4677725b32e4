"""Each changed case reaches CommCare exactly once, whatever the importer does: every fault of
../shared/specs/commcare-bulk-case-import.md section R, driven through the CommCare emulator over HTTP.

After the export that follows a fault, the emulator's cases must equal the marts: every open case exactly
once with the mart's values, every case to close closed, no duplicate external id anywhere.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, List, Optional

import duckdb
import pytest

from emulators.commcare import CommCareEmulator, Job
from exports.commcare import run_export
from exports.commcare.errors import (
    CommCareAuthError,
    CommCareUnavailable,
    CommCareUploadRejected,
    CommCareUploadUncertain,
)
from moodle_commcare.failures import ExitCode
from moodle_commcare.transform import run_transform

from .export_support import assert_store_matches_marts, export_killed_at, mart, settings, spawn_export
from .oracle import AS_OF, VARS


def open_students(db: Path) -> int:
    return sum(1 for r in mart(db, "commcare_student_cases").values() if r["close"] is None)


@pytest.mark.parametrize("fault", ["drop", 502])
def test_lost_upload_answer_is_never_reposted_and_is_resolved_by_external_id(
        db: Path, hq: CommCareEmulator, tmp_path: Path, fault: Any) -> None:
    """The job was queued but the answer was lost: a re-POST would run beside it and create every case twice."""
    hq.importer.chunk_seconds = 0.2  # a job takes a moment: a second upload of the same rows would overlap it
    hq.after_queue_faults = [fault]
    with pytest.raises(CommCareUploadUncertain, match="Nothing is lost"):
        run_export(db, settings(hq, tmp_path), upload=True)
    assert hq.requests["upload"] == 1, "an upload that may have queued a job is never sent again"
    held = run_export(db, settings(hq, tmp_path), upload=True)  # within the grace: the job may still run
    assert held.settle.still_open == 1 and hq.requests["upload"] == 1
    assert held.types[0].planned.get("withheld") == open_students(db)
    assert held.types[1].to_send == 0, "children wait for their parents' job"
    hq.wait_for_jobs()
    final = run_export(db, settings(hq, tmp_path, unknown_job_grace=0), upload=True)
    assert final.settle.looked_up == open_students(db) and hq.requests["case_api"] >= 1
    assert final.types[0].created == 0, "the lost job's cases were found, not created again"
    assert_store_matches_marts(hq, db)


def test_upload_that_never_reached_commcare_is_sent_after_the_lookup(db: Path, hq: CommCareEmulator,
                                                                      tmp_path: Path) -> None:
    hq.before_queue = lambda: False  # the connection broke before CommCare queued anything
    with pytest.raises(CommCareUploadUncertain):
        run_export(db, settings(hq, tmp_path), upload=True)
    hq.before_queue = None
    report = run_export(db, settings(hq, tmp_path, unknown_job_grace=0), upload=True)
    assert report.settle.looked_up == open_students(db) and report.types[0].created == open_students(db)
    assert_store_matches_marts(hq, db)


def test_cases_a_failed_job_may_have_created_are_closed_later(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    """A job that fails after its first chunk has created 100 cases the ledger never heard of."""
    def fail_enrolments(job: Job) -> None:
        if job.case_type == "course_enrolment":
            job.fail_after_chunks, job.fail_message = 1, "Error: the import worker was restarted"

    hq.after_queue = fail_enrolments
    first = run_export(db, settings(hq, tmp_path), upload=True)
    assert first.types[1].failed == first.types[1].to_send > 100
    created = hq.by_external_id("course_enrolment")
    assert len(created) == 100, "the first chunk stays applied: no rollback"
    hq.after_queue = None
    leaving = sorted(created)[:5]
    with duckdb.connect(str(db)) as con:  # these students leave the course before the next run
        con.execute("update commcare.commcare_enrolment_cases set close = 'yes' where external_id in "
                    "(select unnest(?::varchar[]))", [leaving])
    report = run_export(db, settings(hq, tmp_path), upload=True)
    assert report.types[1].closed == len(leaving)
    assert all(hq.by_external_id("course_enrolment")[e].closed for e in leaving)
    assert_store_matches_marts(hq, db)


def test_status_down_while_the_job_runs_then_settled_not_resent(db: Path, hq: CommCareEmulator,
                                                                 tmp_path: Path) -> None:
    hq.hold_jobs()
    hq.status_faults = [(503, None)] * 3  # every attempt of the first poll
    with pytest.raises(CommCareUnavailable):
        run_export(db, settings(hq, tmp_path, poll_timeout=0.3), upload=True)
    second = run_export(db, settings(hq, tmp_path, poll_timeout=0.3), upload=True)  # the job is still queued
    assert second.settle.still_open == 1 and hq.requests["upload"] == 1, "nothing re-sent beside a queued job"
    hq.release_jobs()
    third = run_export(db, settings(hq, tmp_path), upload=True)
    assert third.settle.settled == 1 and third.types[0].to_send == 0
    assert_store_matches_marts(hq, db)


def test_finished_job_without_result_is_not_taken_as_success(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.owners.discard("demo-group-biology")  # some student rows fail, but the job says nothing about which
    hq.next_job_without_result = True
    first = run_export(db, settings(hq, tmp_path), upload=True)
    assert first.types[0].failed == first.types[0].to_send
    hq.owners.add("demo-group-biology")
    run_export(db, settings(hq, tmp_path), upload=True)
    assert_store_matches_marts(hq, db)


def test_refusal_before_queueing_is_not_retried(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.case_types = set()  # a project whose apps define no case types yet
    with pytest.raises(CommCareUploadRejected, match="does not use cases yet"):
        run_export(db, settings(hq, tmp_path), upload=True)
    assert hq.requests["upload"] == 1, "the same refusal would come back: asked once"
    hq.case_types = {"student", "course_enrolment"}
    run_export(db, settings(hq, tmp_path), upload=True)
    assert_store_matches_marts(hq, db)


def test_location_restricted_user_is_told_what_to_change(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    hq.location_restricted = True
    with pytest.raises(CommCareAuthError, match="all locations"):
        run_export(db, settings(hq, tmp_path), upload=True)
    assert hq.requests["upload"] == 1 and not hq.cases


def test_sheet_name_never_switches_on_multi_sheet_mode(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    """A project may well have a case type named like our sheet; in multi-sheet mode 'on' skips every new row."""
    hq.case_types |= {"cases", "moodle_cases", "moodle-cases", "students"}
    run_export(db, settings(hq, tmp_path), upload=True)
    assert all(len(u["sheets"]) == 1 and u["sheets"][0] not in hq.case_types for u in hq.uploads)
    assert_store_matches_marts(hq, db)


def test_text_arrives_exactly_as_openpyxl_reads_it(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    typed = {"city": "literal _x000D_ and _x0041_ stay", "department": "Line one\r\nLine two\rthree",
             "institution": "a x005F_ b"}
    with duckdb.connect(str(db)) as con:
        ext = con.execute("select min(external_id) from commcare.commcare_student_cases where close is null").fetchone()[0]
        for column, value in typed.items():
            con.execute(f"update commcare.commcare_student_cases set {column} = ? where external_id = ?", [value, ext])
    run_export(db, settings(hq, tmp_path), upload=True)
    case = hq.by_external_id("student")[ext]
    assert case.properties["city"] == typed["city"], "a literal _xHHHH_ round-trips"
    assert case.properties["department"] == "Line one\nLine two\nthree", "not _x000D_"
    assert case.properties["institution"] == "a x005f_ b", "the one spelling openpyxl does not delete"


def test_dates_pass_data_dictionary_validation(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    with duckdb.connect(str(db)) as con:
        dated = {t: [r[0] for r in con.execute(f"describe commcare.{m}").fetchall() if r[1] == "DATE"]
                 for t, m in (("student", "commcare_student_cases"), ("course_enrolment", "commcare_enrolment_cases"))}
    assert "last_course_access" in dated["course_enrolment"] and "last_site_access" in dated["student"]
    hq.importer.dictionary = {t: {p: "date" for p in props} for t, props in dated.items()}
    hq.importer.validate_dictionary = True
    report = run_export(db, settings(hq, tmp_path), upload=True)
    assert all(t.failed == 0 for t in report.types), [t.errors for t in report.types]
    assert_store_matches_marts(hq, db)


def test_student_who_returns_reaches_phones_again_as_a_new_episode(db: Path, hq: CommCareEmulator,
                                                                   tmp_path: Path) -> None:
    run_export(db, settings(hq, tmp_path), upload=True)
    enrolments = mart(db, "commcare_enrolment_cases")
    student, course = next((r["parent_external_id"], ext) for ext, r in enrolments.items() if r["close"] is None)
    others = [ext for ext, r in enrolments.items() if r["parent_external_id"] == student and r["close"] is None]

    def set_close(value: Optional[str], students: List[str], courses: List[str]) -> None:
        with duckdb.connect(str(db)) as con:
            con.execute("update commcare.commcare_student_cases set close = ? where external_id in "
                        "(select unnest(?::varchar[]))", [value, students])
            con.execute("update commcare.commcare_enrolment_cases set close = ? where external_id in "
                        "(select unnest(?::varchar[]))", [value, courses])

    set_close("yes", [student], others)  # suspended: every case closes
    left = run_export(db, settings(hq, tmp_path), upload=True)
    assert (left.types[0].closed, left.types[1].closed) == (1, len(others))
    set_close(None, [student], [course])  # back, in one course
    back = run_export(db, settings(hq, tmp_path), upload=True)
    assert (back.types[0].planned.get("reopen"), back.types[1].planned.get("reopen")) == (1, 1)
    students, courses = hq.by_external_id("student"), hq.by_external_id("course_enrolment")
    assert students[student].closed and not students[f"{student}-r1"].closed, "history kept, a new open case"
    assert courses[course].closed and not courses[f"{course}-r1"].closed
    parent = hq.cases[courses[f"{course}-r1"].parent[1]]  # type: ignore[index]
    assert parent.external_id == f"{student}-r1"
    assert_store_matches_marts(hq, db)
    again = run_export(db, settings(hq, tmp_path), upload=True)
    assert all(t.to_send == 0 for t in again.types), "a reopened case is as quiet as any other"


def time_derived(row: Dict[str, Any]) -> tuple:
    """What a day passing may change in a case: the engagement band, and assignments falling overdue."""
    return row["engagement_status"], row.get("missing_submissions")


def test_a_quiet_day_resends_only_cases_whose_engagement_changed(db: Path, hq: CommCareEmulator,
                                                                 tmp_path: Path) -> None:
    run_export(db, settings(hq, tmp_path), upload=True)
    before = {t: mart(db, t) for t in ("commcare_student_cases", "commcare_enrolment_cases")}
    run_transform(db, {**VARS, "as_of": (AS_OF + timedelta(days=3)).isoformat(sep=" ")})  # same Moodle data
    after = {t: mart(db, t) for t in before}
    changed = {t: {e for e, r in after[t].items() if time_derived(r) != time_derived(before[t][e])} for t in before}
    moving = {t: {e for e in changed[t] if after[t][e]["close"] is None} for t in before}  # closed cases rest
    assert changed["commcare_enrolment_cases"], "three days move some students between bands"
    for t in before:
        for ext, row in after[t].items():
            if ext not in changed[t]:
                assert row == before[t][ext], f"{ext} changed though nothing in Moodle did"
    report = run_export(db, settings(hq, tmp_path), upload=True, dry_run=True)
    planned = {t.case_type: t.to_send for t in report.types}
    assert planned == {"student": len(moving["commcare_student_cases"]),
                       "course_enrolment": len(moving["commcare_enrolment_cases"]),
                       "course": 0, "student_course": 0}  # nobody is mapped to a mobile worker of their own


def test_second_export_meanwhile_stops_with_a_clear_message(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    with duckdb.connect(str(db)):  # another process (an export, an analyst) holds the warehouse
        proc = spawn_export(db, hq, tmp_path)
        out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == ExitCode.BUSY and "open in another program" in out, out[-2000:]
    assert hq.requests["upload"] == 0


@pytest.mark.parametrize("point", ["before_post", "after_post", "while_polling", "before_ledger_write"])
def test_kill_at_any_point_then_a_normal_export_leaves_no_duplicate_and_loses_nothing(
        db: Path, hq: CommCareEmulator, tmp_path: Path, point: str) -> None:
    export_killed_at(point, db, hq, tmp_path)
    with duckdb.connect(str(db)) as con:  # and Moodle changed meanwhile
        con.execute("update commcare.commcare_student_cases set city = 'Kisumu' where external_id = "
                    "(select max(external_id) from commcare.commcare_student_cases where close is null)")
    run_export(db, settings(hq, tmp_path, unknown_job_grace=0), upload=True)
    assert_store_matches_marts(hq, db)
    quiet = run_export(db, settings(hq, tmp_path), upload=True)
    assert all(t.to_send == 0 for t in quiet.types)


def test_over_long_values_are_cut_on_purpose_and_said(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    """A 100 KB profile field and a 300-character name: cut to what the importer takes, per case in the log."""
    with duckdb.connect(str(db)) as con:
        ext = con.execute("select min(external_id) from commcare.commcare_student_cases where close is null").fetchone()[0]
        con.execute("update commcare.commcare_student_cases set department = repeat('d', 100000), "
                    "name = repeat('n', 300) where external_id = ?", [ext])
    report = run_export(db, settings(hq, tmp_path), upload=True)
    case = hq.by_external_id("student")[ext]
    assert report.types[0].failed == 0, "a long name is cut, not rejected as Name Too Long"
    assert (len(case.name), len(case.properties["department"])) == (255, 32_767)
    assert {(t.external_id, t.column, t.length) for t in report.types[0].truncated} == {
        (ext, "name", 300), (ext, "department", 100_000)}
    with duckdb.connect(str(db)) as con:
        logged = con.execute("select summary from ops.run_log where stage = 'export'").fetchall()[-1][0]
    assert '"column": "department", "length": 100000' in logged


def test_a_typed_triple_dash_stays_a_value(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    """The importer reads a value whose strip() is '---' as "clear" (do_import.py SCALAR_NEVER_WAS)."""
    with duckdb.connect(str(db)) as con:
        ext = con.execute("select min(external_id) from commcare.commcare_student_cases where close is null").fetchone()[0]
        con.execute("update commcare.commcare_student_cases set city = '---', department = ' --- ' "
                    "where external_id = ?", [ext])
    run_export(db, settings(hq, tmp_path), upload=True)
    props = hq.by_external_id("student")[ext].properties
    assert props["city"].replace("\u2060", "") == "---" and props["department"].replace("\u2060", "") == " --- "


def test_a_site_moved_to_a_new_address_keeps_its_cases(db: Path, hq: CommCareEmulator, tmp_path: Path) -> None:
    """External ids embed a site key; derived from the address on each run, a move duplicated every case."""
    from moodle_commcare.transform import TransformError, run_dbt

    run_export(db, settings(hq, tmp_path), upload=True)
    cases, ids = len(hq.cases), set(mart(db, "commcare_student_cases"))
    with duckdb.connect(str(db)) as con:  # the next extract reads the site at its new address
        con.execute("insert into moodle_raw.site_info by name select * replace ("
                    "'https://learn.demo-academy.example/moodle' as siteurl, extracted_at + interval 1 day as "
                    "extracted_at) from moodle_raw.site_info order by extracted_at desc limit 1")
    with pytest.raises(TransformError, match=r"changed from .* to https://learn.demo-academy.example/moodle.*"
                                             r"--accept-site-move"):
        run_transform(db, VARS)
    assert run_dbt(["build"], db, VARS).success  # dbt run by hand checks nothing, but reads the pinned key
    assert set(mart(db, "commcare_student_cases")) == ids
    with pytest.raises(TransformError, match="new key would give every student"):
        run_transform(db, {**VARS, "moodle_site_key": "learn-demo-academy-example-moodle"}, accept_site_move=True)
    run_transform(db, VARS, accept_site_move=True)
    report = run_export(db, settings(hq, tmp_path), upload=True)
    assert all(t.to_send == 0 for t in report.types) and len(hq.cases) == cases, "the same cases, none created"
    run_transform(db, VARS)  # the new address is now the known one
    assert_store_matches_marts(hq, db)
