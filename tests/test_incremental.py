"""Re-runs fetch only what Moodle's access times say may have changed, and changes do arrive."""

from __future__ import annotations

import shutil

from pipelines.moodle.selection import Watermark

from .conftest import Warehouse

PER_STUDENT = ("core_enrol_get_users_courses", "core_completion_get_activities_completion_status")
PER_COURSE_DETAIL = ("gradereport_user_get_grade_items", "core_course_get_contents")


def _snapshot(wh: Warehouse) -> dict:
    return {t: sorted(wh.rows(f'select * exclude (extracted_at, _dlt_load_id, _dlt_id) from "{t}"'), key=repr)
            for t in wh.tables()}


def _engagement_calls(wh: Warehouse) -> int:
    """core_enrol_get_users_courses for engagement; the run also makes a few to count enrolments (returnusercount 1)."""
    return sum(1 for r in wh.moodle.request_log if r["function"] == "core_enrol_get_users_courses"
               and r["params"].get("returnusercount") == "0")


def test_rerun_without_change_loads_nothing_new_and_makes_fewer_requests(warehouse: Warehouse) -> None:
    first = warehouse.extract()
    before = _snapshot(warehouse)
    warehouse.moodle.keep_log = True
    second = warehouse.extract()
    assert _snapshot(warehouse) == before
    assert second.table_rows == first.table_rows
    assert _engagement_calls(warehouse) == 0
    for fn in PER_STUDENT[1:] + PER_COURSE_DETAIL:
        assert second.stats.requests[fn] == 0, fn
    assert second.stats.total_requests < first.stats.total_requests / 5
    for table in ("grades", "course_engagement", "activity_completion", "course_sections", "course_modules",
                  "assignment_submissions", "assignment_user_flags"):
        assert second.rows_loaded.get(table, 0) == 0, table


def test_changed_grade_arrives_with_one_grade_call(warehouse: Warehouse) -> None:
    warehouse.extract()
    s = warehouse.moodle.school
    cid = next(c for c, items in s.grade_items.items() if items and s.students_of(c, True))
    uid = s.students_of(cid, True)[0]
    item = next(i for i in s.grade_items[cid] if i.itemtype == "mod")
    s.set_grade(cid, uid, item.id, 12.5)

    report = warehouse.extract()
    assert report.stats.requests["gradereport_user_get_grade_items"] == 1
    [(raw, formatted)] = warehouse.rows(
        "select graderaw, gradeformatted from grades where course_id=? and user_id=? and grade_item_id=?", cid, uid, item.id)
    assert (raw, formatted) == (12.5, "12.50")
    total_item = next(i for i in s.grade_items[cid] if i.itemtype == "course")
    [(total,)] = warehouse.rows("select graderaw from grades where grade_item_id=? and user_id=?", total_item.id, uid)
    assert total == s.course_total(cid, uid)[0]


def test_changed_profile_arrives(warehouse: Warehouse) -> None:
    warehouse.extract()
    s = warehouse.moodle.school
    uid = next(u for _, u, e in s.all_enrolments() if e.role == "student")
    s.update_user(uid, phone1="+254 700 000 001", city="Mombasa", lastname="Ndegwa-Ôkè")
    warehouse.extract()
    assert warehouse.rows("select phone1, city, lastname from users where id=?", uid) == [
        ("+254 700 000 001", "Mombasa", "Ndegwa-Ôkè")]


def test_student_activity_refreshes_only_that_student(warehouse: Warehouse) -> None:
    warehouse.extract()
    s = warehouse.moodle.school
    cid, uid = next((c, u) for c, u, e in s.all_enrolments()
                    if e.role == "student" and e.active and s.courses[c].enablecompletion)
    module = next(m for m in s.modules[cid] if m.completion and s.completion(m, uid)[0] == 0)
    s.complete_activity(cid, uid, module.cmid)

    warehouse.moodle.keep_log = True
    report = warehouse.extract()
    assert _engagement_calls(warehouse) == 1
    assert report.stats.requests["core_completion_get_activities_completion_status"] == 1
    [(state,)] = warehouse.rows("select state from activity_completion where user_id=? and cmid=?", uid, module.cmid)
    assert state == 1
    tracked = [m for m in s.modules[cid] if m.completion]
    done = sum(1 for m in tracked if s.completion(m, uid)[0] in (1, 2))
    [(progress,)] = warehouse.rows("select progress from course_engagement where user_id=? and course_id=?", uid, cid)
    assert progress == done / len(tracked) * 100.0


def test_unenrolment_and_suspension_are_visible(warehouse: Warehouse) -> None:
    warehouse.extract()
    s = warehouse.moodle.school
    pairs = [(c, u) for c, u, e in s.all_enrolments() if e.role == "student" and e.active]
    (gone_c, gone_u), (sus_c, sus_u) = pairs[0], pairs[-1]
    s.unenrol(gone_c, gone_u)
    s.set_enrolment_active(sus_c, sus_u, False)
    warehouse.extract()
    stale = warehouse.rows(
        "select e.user_id from enrolments e join enrolment_snapshots s using (course_id) "
        "where e.extracted_at < s.extracted_at")
    assert stale == [(gone_u,)]
    assert warehouse.rows("select is_active from enrolments where course_id=? and user_id=?", sus_c, sus_u) == [(False,)]


def test_new_submission_arrives_through_since(warehouse: Warehouse) -> None:
    warehouse.extract()
    s = warehouse.moodle.school
    cid, a = next((cid, rows[0]) for cid, rows in s.assignments.items() if rows and not rows[0].teamsubmission)
    uid = next(u for u in s.students_of(cid) if s.submission(a, u) is None)
    s.submit(a.id, uid)
    report = warehouse.extract()
    assert report.rows_loaded.get("assignment_submissions") == 1
    assert warehouse.rows("select status from assignment_submissions where assignment_id=? and userid=?", a.id, uid) == [
        ("submitted",)]


def test_state_survives_a_lost_working_directory(warehouse: Warehouse) -> None:
    """A scheduled job on a fresh container restores the watermark from DuckDB rather than re-fetching all."""
    warehouse.extract()
    shutil.rmtree(warehouse.path.parent / ".dlt_pipelines")
    warehouse.moodle.keep_log = True
    again = warehouse.extract()
    assert _engagement_calls(warehouse) == 0
    assert again.stats.requests["gradereport_user_get_grade_items"] == 0


def test_full_refresh_fetches_everything_again(warehouse: Warehouse) -> None:
    first = warehouse.extract()
    again = warehouse.extract(full_refresh=True)
    for fn in PER_STUDENT + PER_COURSE_DETAIL:
        assert again.stats.requests[fn] == first.stats.requests[fn] > 0, fn


def test_watermark_keeps_ties_at_the_boundary() -> None:
    mark = Watermark()
    mark.observe(100, "u1")
    mark.observe(100, "u2")
    mark.observe(90, "u3")
    assert (mark.at, mark.keys) == (100, {"u1", "u2"})
    restored = Watermark.from_state(mark.to_state())
    assert restored is not None
    assert not restored.is_after(100, "u1")
    assert restored.is_after(100, "u4"), "another user seen at the same second is new"
    assert restored.is_after(101, "u1") and not restored.is_after(99, "u9")


def test_course_added_to_the_selection_is_fetched_in_full(warehouse: Warehouse) -> None:
    courses = sorted(warehouse.moodle.school.courses)
    warehouse.extract(course_ids=courses[:2])
    report = warehouse.extract()
    assert report.stats.requests["gradereport_user_get_grade_items"] == len(courses) - 2
    assert report.stats.requests["core_course_get_contents"] == len(courses) - 2
    got = {r[0] for r in warehouse.rows("select distinct course_id from activity_completion")}
    assert got == {c for c in courses if warehouse.moodle.school.courses[c].enablecompletion
                   and warehouse.moodle.school.students_of(c, only_active=True)}


# ---------------------------------------------------------------- defects a reviewer reproduced (issue 9, part 3)

def test_narrowed_run_does_not_hide_earlier_grading_in_other_courses(warehouse: Warehouse) -> None:
    """`extract --course-id B` must not move course A's watermark past a teacher's grading in A."""
    warehouse.extract()
    s = warehouse.moodle.school
    graded = [c for c, items in s.grade_items.items() if items and s.students_of(c, True)]
    course_a, course_b = graded[0], graded[1]
    uid = s.students_of(course_a, True)[0]
    item = next(i for i in s.grade_items[course_a] if i.itemtype == "mod")
    s.set_grade(course_a, uid, item.id, 42.5)  # the teacher enters course A at t1
    s.record_access(s.students_of(course_b, True)[0], course_b)  # later activity in B, at t2 > t1
    warehouse.extract(course_ids=[course_b])
    warehouse.extract()
    assert warehouse.rows("select graderaw from grades where course_id=? and user_id=? and grade_item_id=?",
                          course_a, uid, item.id) == [(42.5,)]


def test_full_refresh_reloads_every_submission(warehouse: Warehouse) -> None:
    warehouse.extract()
    want = warehouse.rows("select id, status, timemodified from assignment_submissions order by id")
    assert len({r[2] for r in want}) > 1, "submissions at several times"
    with __import__("duckdb").connect(str(warehouse.path)) as con:  # lost or damaged rows in the warehouse
        con.execute("delete from moodle_raw.assignment_submissions")
    warehouse.extract(full_refresh=True)
    assert warehouse.rows("select id, status, timemodified from assignment_submissions order by id") == want


def test_course_added_to_the_selection_gets_its_older_submissions(warehouse: Warehouse) -> None:
    s = warehouse.moodle.school
    with_subs = [c for c, rows in s.assignments.items()
                 if rows and any(s.submission(a, u) for a in rows for u in s.students_of(c))]
    newest = max(with_subs, key=lambda c: max(s.submission(a, u)[1] for a in s.assignments[c]  # type: ignore[index]
                                             for u in s.students_of(c) if s.submission(a, u)))
    warehouse.extract(course_ids=[newest])
    warehouse.extract()
    got = {(r[0], r[1]) for r in warehouse.rows("select assignment_id, userid from assignment_submissions where userid <> 0")}
    want = {(a.id, u) for c in with_subs for a in s.assignments[c] for u in s.students_of(c) if s.submission(a, u)}
    assert got == want


def test_an_access_time_in_the_future_does_not_freeze_later_changes(warehouse: Warehouse, caplog) -> None:  # type: ignore[no-untyped-def]
    """One lastaccess typed as 2100 used to become the course's watermark: nothing after it was ever seen."""
    s = warehouse.moodle.school
    cid = next(c for c, items in s.grade_items.items() if items and len(s.students_of(c, True)) > 1)
    uid, other = s.students_of(cid, True)[:2]
    s.record_access(other, cid, at=4_102_444_800)  # 2100-01-01
    with caplog.at_level("WARNING"):
        warehouse.extract()
    assert "in the future" in caplog.text
    item = next(i for i in s.grade_items[cid] if i.itemtype == "mod")
    s.set_grade(cid, uid, item.id, 12.5)  # later, by today's clock
    warehouse.extract()
    assert warehouse.rows("select graderaw from grades where course_id=? and user_id=? and grade_item_id=?",
                          cid, uid, item.id) == [(12.5,)]


def test_a_submission_stamped_in_the_future_does_not_move_the_cursor() -> None:
    from pipelines.moodle.selection import Cursor

    rows = [{"id": 1, "timemodified": 1_000}, {"id": 2, "timemodified": 4_102_444_800}]
    cursor = Cursor.after(500, set(), rows, horizon=2_000)
    assert (cursor.since, cursor.ids) == (1_000, {1})
