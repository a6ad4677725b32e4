"""The source's resources, one per table (course_contents writes two), each taking the client and the run's shared
reads (run.py). Every table has a primary key, is merged on re-run, and exists with all its columns from the first
run (schema.py). Calls that fan out per course or per student are made only where the run's watermarks say
something may have changed (selection.py); profiles are fetched in batches of ids, never one call per user. What
Moodle hides from the token's user stops the run or is recorded in access_gaps (gaps.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Iterator, List, Optional, Sequence, cast

import dlt

from . import arrow, schema, webservice
from . import report as participants
from .arrow import TableRows
from .client import MoodleClient
from .config import CONTENTS_PER_REQUEST
from .gaps import ENROLMENT_GAPS, OUTLINE_GAPS, PROFILE_GAPS, PROGRESS_GAPS, graded_activities
from .readable import PlainNames
from .run import MoodleRun
from .selection import Cursor, SubmissionCursors

SECTION = "moodle"  # dlt's config section of the source and its resources (sources.moodle)


def _hints(table: str) -> Any:
    columns = schema.columns(table)
    if table in arrow.TABLES:  # dlt's own columns, declared as its json normaliser would add them (arrow.py)
        columns = {**columns, **arrow.DLT_COLUMNS}
    return dlt.mark.make_hints(table_name=table, primary_key=schema.PRIMARY_KEYS[table], write_disposition="merge",
                               columns=cast(Any, columns))  # TColumnSchema dicts


def _tables(*tables: str) -> Iterator[Any]:
    """Declares the tables a resource writes, with their own keys and columns (dlt table variants), and creates
    each with all its columns even when the run yields no row for it. Call before yielding rows to them."""
    for table in tables:
        yield dlt.mark.with_hints(dlt.mark.materialize_table_schema(), _hints(table), create_table_variant=True)


def _to(table: str, rows: Any) -> Any:
    """Rows for a table `_tables` declared (a list of dicts, or an Arrow table from arrow.TableRows). Only the table
    name travels with each batch: hints attached to every batch cost dlt a schema merge each (0.8 ms a batch, 36 s
    over a district's completion calls)."""
    return dlt.mark.with_table_name(rows, table)


def _handed(rows: TableRows, batches: List[Any]) -> Iterator[Any]:
    """What a big table's TableRows hands on: Arrow tables of many calls' rows (arrow.py says why)."""
    return (_to(rows.table, batch) for batch in batches)


def _stamped(row: Dict[str, Any], run: MoodleRun) -> Dict[str, Any]:
    row["extracted_at"] = run.extracted_at
    return row


def _gap_rows(run: MoodleRun, codes: Sequence[str]) -> Iterator[Any]:
    rows = [_stamped(g.row(), run) for g in run.gaps.found if g.code in codes]
    if rows:
        yield _to("access_gaps", rows)


@dlt.resource(name="site_info", section=SECTION)
def site_info(client: MoodleClient, run: MoodleRun) -> Iterator[Any]:
    run.require("site_info")
    info = run.site_info()
    yield from _tables("site_info", "access_gaps")
    yield _to("site_info", _stamped({
        "siteurl": info.get("siteurl") or client.settings.base_url,
        "sitename": info.get("sitename"),
        "release": info.get("release"),
        "version": str(info.get("version")) if info.get("version") is not None else None,
        "lang": info.get("lang"),
        "token_userid": info.get("userid"),
        "token_username": info.get("username"),
        "userissiteadmin": info.get("userissiteadmin"),
        "functions": sorted(f.get("name") for f in info.get("functions") or []),
    }, run))


@dlt.resource(name="course_categories", section=SECTION)
def course_categories(client: MoodleClient, run: MoodleRun) -> Iterator[Any]:
    run.require("course_categories")
    yield from _tables("course_categories")
    yield _to("course_categories", [_stamped({k: c.get(k) for k in schema.TABLES["course_categories"]}, run)
                                    for c in run.categories()])


@dlt.resource(name="courses", section=SECTION)
def courses(client: MoodleClient, run: MoodleRun) -> Iterator[Any]:
    run.require("courses")
    yield from _tables("courses")
    yield _to("courses", [_stamped({k: c.get(k) for k in schema.TABLES["courses"]}, run) for c in run.courses()])


@dlt.resource(name="enrolments", section=SECTION)
def enrolments(client: MoodleClient, run: MoodleRun) -> Iterator[Any]:
    """Every pair seen this run; a pair missing from a later run's snapshot of its course was unenrolled.

    Moodle reports no unenrolment, so each course's snapshot time goes to `enrolment_snapshots`:
    a pair whose extracted_at is older than its course's snapshot is no longer enrolled.
    """
    run.require("enrolments")
    yield from _tables("enrolments", "enrolment_snapshots", "access_gaps")
    gathered = TableRows("enrolments")
    for course_id, rows in run.enrolments().items():
        yield from _handed(gathered, gathered.add([_stamped({
            "course_id": e.course_id, "user_id": e.user_id, "roles": ",".join(e.role_shortnames),
            "role_ids": ",".join(map(str, e.role_ids)), "is_student": e.is_student,
            "is_active": e.is_active, "lastaccess": e.lastaccess, "lastcourseaccess": e.lastcourseaccess,
            "group_ids": ",".join(map(str, e.group_ids)),
        }, run) for e in rows]))
        yield _to("enrolment_snapshots", _stamped({"course_id": course_id, "enrolled_count": len(rows)}, run))
    yield from _handed(gathered, gathered.rest())
    yield from _gap_rows(run, ENROLMENT_GAPS)


@dlt.resource(name="users", section=SECTION)
def users(client: MoodleClient, run: MoodleRun) -> Iterator[Any]:
    """Full profiles, `user_batch_size` ids per POST (PHP's max_input_vars caps one request)."""
    run.require("users")
    yield from _tables("users", "access_gaps")
    ids = run.user_ids()
    size = run.settings.user_batch_size
    batches = [ids[i: i + size] for i in range(0, len(ids), size)]
    seen: Counter[str] = Counter()
    missing: List[int] = []
    students = run.student_ids()

    for batch, found in client.fan_out(batches, lambda batch: webservice.users_by_id(client, batch)):
        missing += sorted(set(batch) - {int(u["id"]) for u in found})
        seen.update(k for u in found if int(u["id"]) in students for k, v in u.items() if v is not None and v != "")
        yield _to("users", [_stamped(_profile(u), run) for u in found])
    run.gaps.check_profiles(missing, seen, sum(1 for i in ids if i in students), run.active_user_ids())
    yield from _gap_rows(run, PROFILE_GAPS)


@dlt.resource(name="grades", section=SECTION)
def grades(client: MoodleClient, run: MoodleRun, plain: Optional[PlainNames] = None) -> Iterator[Any]:
    """Every graded user of a course in one call (userid=0), for courses with activity since the last run. `plain`
    adds the plain-text names (readable.py; the source passes it)."""
    run.require("grades")
    yield from _tables("grades")
    gathered = TableRows("grades", plain)
    for course, report in client.fan_out(run.changed_courses(), lambda c: webservice.grade_report(client, c["id"])):
        run.gaps.check_grade_report(course, report, run.active_students(course["id"]))
        run.graded_activities[course["id"]] = graded_activities(report)
        # a row per grade item of each user: the item's fields, its id as grade_item_id, the user's id
        items: List[Dict[str, Any]] = []
        user_ids: List[Any] = []
        for usergrade in report.get("usergrades") or []:
            gradeitems = usergrade.get("gradeitems") or []
            if gradeitems:
                items += gradeitems
                user_ids += [usergrade["userid"]] * len(gradeitems)
        yield from _handed(gathered, gathered.add_items(
            items, fixed={"course_id": course["id"], "extracted_at": run.extracted_at},
            given={"user_id": user_ids, "grade_item_id": [item["id"] for item in items]}))
    yield from _handed(gathered, gathered.rest())


@dlt.resource(name="course_engagement", section=SECTION)
def course_engagement(client: MoodleClient, run: MoodleRun) -> Iterator[Any]:
    """Progress, completion and last access per active student enrolment of the changed students: from the
    participants report when one is configured (report.py: its pages, not a call per student), else (and for the
    enrolments the report lacks) one call per student, in batches where the service allows (client.call_each)."""
    run.require("course_engagement")
    yield from _tables("course_engagement", "access_gaps")
    selected = {c["id"] for c in run.courses()}
    student_pairs = {(e.user_id, e.course_id) for e in run.all_enrolments() if e.is_student}
    tracked = {c["id"] for c in run.courses() if c.get("enablecompletion")}
    progress_seen = tracked_rows = 0
    students = run.changed_students()
    # with a report configured, every progress is to one decimal, as it shows them, whether this run reads it or
    # not: a student read either way keeps one value
    to_one_decimal = bool(run.settings.participants_report_id)
    if to_one_decimal and participants.worth_reading(run, students):
        found, students = participants.engagement(client, run, students)
        tracked_rows += sum(1 for r in found if r["course_id"] in tracked)
        progress_seen += sum(1 for r in found if r["course_id"] in tracked and r["progress"] is not None)
        if found:
            yield _to("course_engagement", [_stamped(r, run) for r in found])

    answers = client.call_each(webservice.FN_USERS_COURSES, students,
                               lambda user_id: webservice.users_courses_params(user_id, with_counts=False))
    for user_id, courses_of_user in answers:
        rows = [_stamped({
            "user_id": user_id, "course_id": c["id"],
            "progress": participants.one_decimal(c.get("progress")) if to_one_decimal else c.get("progress"),
            "completed": c.get("completed"), "lastaccess": c.get("lastaccess"),
            "completionusertracked": c.get("completionusertracked"),
        }, run) for c in courses_of_user or [] if c["id"] in selected and (user_id, c["id"]) in student_pairs]
        tracked_rows += sum(1 for r in rows if r["course_id"] in tracked)
        progress_seen += sum(1 for r in rows if r["course_id"] in tracked and r["progress"] is not None)
        if rows:
            yield _to("course_engagement", rows)
    run.gaps.check_progress(tracked_rows, progress_seen)
    yield from _gap_rows(run, PROGRESS_GAPS)


@dlt.resource(name="activity_completion", section=SECTION)
def activity_completion(client: MoodleClient, run: MoodleRun) -> Iterator[Any]:
    """One call per student and course, only where the student entered the course since the last run (in batches of
    one course's students where the service allows)."""
    run.require("activity_completion")
    yield from _tables("activity_completion")
    gathered = TableRows("activity_completion")
    answers = client.call_each(webservice.FN_ACTIVITIES_COMPLETION, run.changed_student_pairs(),
                               lambda e: webservice.activities_completion_params(e.course_id, e.user_id),
                               batch_key=lambda e: e.course_id)  # one course's calls together: its caches serve them
    for e, answer in answers:  # a row per status: its fields, the student's and the course's ids
        yield from _handed(gathered, gathered.add_items(answer.get("statuses") or [], fixed={
            "user_id": e.user_id, "course_id": e.course_id, "extracted_at": run.extracted_at}))
    yield from _handed(gathered, gathered.rest())


# the `dates` entry (core\activity_dates, for the token's user) that is an activity's deadline: an assignment's
# due date (mod/assign/classes/dates.php), a quiz's closing time (mod/quiz/classes/dates.php)
DUE_DATA_IDS = ("duedate", "timeclose")


def _due_at(module: Dict[str, Any]) -> Any:
    return next((d.get("timestamp") for d in module.get("dates") or [] if d.get("dataid") in DUE_DATA_IDS), None)


@dlt.resource(name="course_contents", section=SECTION)
def course_contents(client: MoodleClient, run: MoodleRun) -> Iterator[Any]:
    """Sections to `course_sections`, activities to `course_modules`: the outline a phone shows offline, as the
    token's user sees it. What keeps an activity off a student's phone travels with it: `visible` (hidden),
    `visibleoncoursepage` (stealth), `availability` (the restriction JSON, sent only to a user who may see hidden
    activities or edit the course), `availabilityinfo` (why the token's user may not enter it), `uservisible`."""
    run.require("course_sections")
    yield from _tables("course_sections", "course_modules", "access_gaps")
    outlines = client.call_each(webservice.FN_COURSE_CONTENTS, run.changed_courses(),
                                lambda c: webservice.course_contents_params(c["id"]), per_request=CONTENTS_PER_REQUEST)
    for course, sections in outlines:
        sections = sections or []
        section_rows, modules = [], []
        for section in sections:
            section_rows.append(_stamped({
                "id": section["id"], "course_id": course["id"], "section": section.get("section"),
                "name": section.get("name"), "visible": section.get("visible"), "summary": section.get("summary"),
                "module_count": len(section.get("modules") or []), "uservisible": section.get("uservisible"),
                "availabilityinfo": section.get("availabilityinfo"),
            }, run))
            for position, m in enumerate(section.get("modules") or []):
                modules.append(_stamped({
                    "id": m["id"], "course_id": course["id"], "section_id": section["id"], "position": position,
                    **{k: m.get(k) for k in ("instance", "modname", "name", "url", "visible", "uservisible",
                                             "visibleoncoursepage", "availability", "availabilityinfo",
                                             "completion", "description")},
                    "due_at": _due_at(m),
                }, run))
        run.gaps.check_outline(course["id"], run.graded_activities.get(course["id"], {}), {m["id"] for m in modules})
        if section_rows:
            yield _to("course_sections", section_rows)
        if modules:
            yield _to("course_modules", modules)
    yield from _gap_rows(run, OUTLINE_GAPS)



@dlt.resource(name="assignments", section=SECTION)
def assignments(client: MoodleClient, run: MoodleRun) -> Iterator[Any]:
    run.require("assignments")
    yield from _tables("assignments")
    rows = [_stamped(dict(a), run) for a in run.assignments()]
    if rows:
        yield _to("assignments", rows)


@dlt.resource(name="assignment_submissions", section=SECTION)
def assignment_submissions(client: MoodleClient, run: MoodleRun) -> Iterator[Any]:
    """Submissions changed since each course's cursor (selection.SubmissionCursors): mod_assign_get_submissions
    filters on `since` itself, inclusively."""
    run.require("assignment_submissions")
    yield from _tables("assignment_submissions")
    cursors = SubmissionCursors(run.state, run.settings.full_refresh)

    def fetch(batch: Any) -> dict:
        since, _, assignment_ids = batch
        return webservice.submissions(client, assignment_ids, since)

    batches = run.assignment_batches([c["id"] for c in run.courses()], cursors.since())
    gathered = TableRows("assignment_submissions")
    for (since, course_ids, _), answer in client.fan_out(batches, fetch):
        run.gaps.check_grading_answer(webservice.FN_SUBMISSIONS, answer)
        seen_at_since = cursors.seen_at(course_ids) if since else set()
        rows = []
        for assignment in answer.get("assignments") or []:
            for sub in assignment.get("submissions") or []:
                if sub.get("timemodified") == since and sub["id"] in seen_at_since:
                    continue  # `since` is inclusive: the rows at the cursor's second came last run
                rows.append(_stamped({
                    "id": sub["id"], "assignment_id": assignment["assignmentid"],
                    **{k: sub.get(k) for k in ("userid", "groupid", "attemptnumber", "status", "gradingstatus",
                                               "timecreated", "timemodified")},
                }, run))
        # the batch's newest change: everything of these courses before it has now been seen
        cursors.advance(course_ids, Cursor.after(since, seen_at_since, rows, run.horizon))
        yield from _handed(gathered, gathered.add(rows))
    yield from _handed(gathered, gathered.rest())
    cursors.store()


@dlt.resource(name="assignment_user_flags", section=SECTION)
def assignment_user_flags(client: MoodleClient, run: MoodleRun) -> Iterator[Any]:
    """Extensions granted to students (a student's own later due date), for courses that changed."""
    run.require("assignment_user_flags")
    yield from _tables("assignment_user_flags")
    changed = {c["id"] for c in run.changed_courses()}
    batches = [ids for _, _, ids in run.assignment_batches(sorted(changed), {})]
    gathered = TableRows("assignment_user_flags")
    for _, answer in client.fan_out(batches, lambda ids: webservice.user_flags(client, ids)):
        run.gaps.check_grading_answer(webservice.FN_USER_FLAGS, answer)
        rows = [_stamped({"assignment_id": a["assignmentid"], "user_id": f["userid"],
                          "extensionduedate": f.get("extensionduedate"), "locked": f.get("locked")}, run)
                for a in answer.get("assignments") or [] for f in a.get("userflags") or []]
        yield from _handed(gathered, gathered.add(rows))
    yield from _handed(gathered, gathered.rest())


@dlt.resource(name="assignment_due_dates", section=SECTION)
def assignment_due_dates(client: MoodleClient, run: MoodleRun) -> Iterator[Any]:
    """Each active student's own dates (user and group overrides), only with due_date_overrides: Moodle has no
    call listing overrides before 5.x, so this is one mod_assign_get_participant call per student and assignment."""
    yield from _tables("assignment_due_dates")
    if not run.settings.due_date_overrides:
        return
    run.require("assignment_due_dates")
    changed = {c["id"] for c in run.changed_courses()}
    by_course: Dict[int, List[dict]] = {}
    for a in run.assignments():
        by_course.setdefault(a["course_id"], []).append(a)
    pairs = [(a, e) for cid in sorted(changed) for e in run.enrolments()[cid] if e.is_student and e.is_active
             for a in by_course.get(cid, [])]

    def fetch(pair: Any) -> dict:
        return webservice.participant(client, pair[0]["id"], pair[1].user_id)

    gathered = TableRows("assignment_due_dates")
    for (a, e), got in client.fan_out(pairs, fetch):
        yield from _handed(gathered, gathered.add([_stamped({
            "assignment_id": a["id"], "user_id": e.user_id, "duedate": got.get("duedate"),
            "cutoffdate": got.get("cutoffdate"), "allowsubmissionsfromdate": got.get("allowsubmissionsfromdate")}, run)]))
    yield from _handed(gathered, gathered.rest())


def _profile(user: Dict[str, Any]) -> Dict[str, Any]:
    """The profile columns we keep; absent optional fields (Moodle omits empty or hidden ones) become NULL."""
    row = {k: user.get(k) for k in schema.TABLES["users"] if k != "customfields"}
    if row["suspended"] is not None:
        row["suspended"] = bool(row["suspended"])
    fields = user.get("customfields") or []
    row["customfields"] = {f.get("shortname"): f.get("value") for f in fields} if fields else None
    return row
