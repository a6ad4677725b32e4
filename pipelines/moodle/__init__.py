"""dlt source for a Moodle site's web services: courses, enrolments, profiles, grades and engagement.

Every resource is a DuckDB table with a primary key, merged on re-run, and exists with all its columns from
the first run (schema.py). Calls that fan out per course or per student are made only where Moodle's access
times say something may have changed (see snapshot.py), and profiles are fetched in batches of ids, never one
call per user. What Moodle hides from the token's user stops the run or is recorded (gaps.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Iterator, List, Optional, Sequence, cast

import dlt
from dlt.sources import DltResource

from . import readable, schema, settings
from .client import MoodleClient, RequestStats
from .config import MoodleSettings
from .snapshot import SUBMISSION_SINCE_KEY, Cursor, Enrolment, MoodleSnapshot

__all__ = ["moodle_source", "MoodleSettings", "RequestStats"]


def _hints(table: str) -> Any:
    return dlt.mark.make_hints(table_name=table, primary_key=schema.PRIMARY_KEYS[table], write_disposition="merge",
                               columns=cast(Any, schema.columns(table)))  # TColumnSchema dicts


def _tables(*tables: str) -> Iterator[Any]:
    """Declares the tables a resource writes, with their own keys and columns (dlt table variants), and creates
    each with all its columns even when the run yields no row for it. Call before yielding rows to them."""
    for table in tables:
        yield dlt.mark.with_hints(dlt.mark.materialize_table_schema(), _hints(table), create_table_variant=True)


def _to(table: str, rows: Any) -> Any:
    """Rows for a table `_tables` declared. Only the table name travels with each batch: hints attached to every
    batch cost dlt a schema merge each (0.8 ms a batch, 36 s over a district's completion calls)."""
    return dlt.mark.with_table_name(rows, table)


@dlt.source(name="moodle", max_table_nesting=0)
def moodle_source(
    base_url: str = dlt.config.value,
    token: Optional[str] = dlt.secrets.value,
    username: Optional[str] = None,
    password: Optional[str] = dlt.secrets.value,
    service: str = "moodle_mobile_app",
    course_ids: Optional[List[int]] = None,
    category_ids: Optional[List[int]] = None,
    student_roles: Optional[List[str]] = None,
    max_concurrency: int = settings.DEFAULT_CONCURRENCY,
    page_size: int = settings.DEFAULT_PAGE_SIZE,
    user_batch_size: int = settings.DEFAULT_USER_BATCH_SIZE,
    request_timeout: float = settings.DEFAULT_TIMEOUT_SECONDS,
    max_attempts: int = settings.DEFAULT_MAX_ATTEMPTS,
    backoff_factor: float = settings.DEFAULT_BACKOFF_FACTOR,
    max_retry_delay: float = settings.DEFAULT_MAX_RETRY_DELAY,
    allow_insecure_http: bool = False,
    full_refresh: bool = False,
    allow_hidden: Optional[List[str]] = None,
    due_date_overrides: bool = False,
    language: Optional[str] = None,
    default_phone_region: Optional[str] = None,
    http_auth: Any = None,
    request_stats: Any = None,
    known_enrolments: Any = None,
) -> Sequence[DltResource]:
    """Load a Moodle site.

    Args:
        base_url: the site root, e.g. https://moodle.school.org (config: sources.moodle.base_url).
        token: a web-service token (secret); or username + password + service, exchanged at login/token.php.
        course_ids / category_ids: limit the run to these courses, or to courses in these categories
            (sub-categories included).
        student_roles: role shortnames that make an enrolment a student's (default: student).
        max_concurrency: parallel requests to Moodle (2-4 is polite; Moodle has no rate limiter).
        full_refresh: ignore the watermarks and cursors and re-fetch everything.
        allow_hidden: data the site hides from the token's user that the run may go without
            ("phones", "last_access"); anything else hidden stops the run.
        due_date_overrides: read each student's own due date (user and group overrides): one call per student
            and assignment of the courses that changed.
        language: the language names typed in several languages are read in (e.g. sw); default: the language
            Moodle reports for the token's user. Names already loaded keep theirs until a full refresh.
        default_phone_region: country (ISO code) for phones typed without a country code by users whose
            profile has no country.
        http_auth: (user, password) of HTTP basic auth in front of Moodle; run_extract takes it out of a
            base_url written https://user:password@host, so the address dlt traces carries no password.
        request_stats: a RequestStats to count requests into (the CLI prints it).
        known_enrolments: {course id: {user id: is_active}} as the warehouse's last run loaded them (run_extract
            reads them): a member missing, or no longer active, in a course's read is read once more to confirm it.
    """
    config = MoodleSettings.build(
        base_url, token=token, username=username, password=password, course_ids=course_ids,
        category_ids=category_ids, student_roles=student_roles, service=service,
        max_concurrency=max_concurrency, page_size=page_size, user_batch_size=user_batch_size,
        request_timeout=request_timeout, max_attempts=max_attempts, backoff_factor=backoff_factor,
        max_retry_delay=max_retry_delay, allow_insecure_http=allow_insecure_http, full_refresh=full_refresh,
        allow_hidden=allow_hidden, due_date_overrides=due_date_overrides, language=language,
        default_phone_region=default_phone_region, http_auth=http_auth,
    )
    client = MoodleClient(config, stats=request_stats if isinstance(request_stats, RequestStats) else None)
    holder: Dict[str, MoodleSnapshot] = {}

    def snap(resource: str) -> MoodleSnapshot:
        """The run's shared snapshot, created on first use so it reads the pipeline's state."""
        if "s" not in holder:
            known = known_enrolments if isinstance(known_enrolments, dict) else None
            holder["s"] = MoodleSnapshot(client, config, dlt.current.source_state(), known_enrolments=known)
        holder["s"].require(resource)
        return holder["s"]

    def stamp(row: Dict[str, Any], s: MoodleSnapshot) -> Dict[str, Any]:
        row["extracted_at"] = s.extracted_at
        return row

    def gap_rows(s: MoodleSnapshot, codes: Sequence[str]) -> Iterator[Any]:
        rows = [stamp(g.row(), s) for g in s.gaps.found if g.code in codes]
        if rows:
            yield _to("access_gaps", rows)

    @dlt.resource(name="site_info")
    def site_info() -> Iterator[Any]:
        s = snap("site_info")
        info = s.site_info()
        yield from _tables("site_info", "access_gaps")
        yield _to("site_info", stamp({
            "siteurl": info.get("siteurl") or config.base_url,
            "sitename": info.get("sitename"),
            "release": info.get("release"),
            "version": str(info.get("version")) if info.get("version") is not None else None,
            "lang": info.get("lang"),
            "token_userid": info.get("userid"),
            "token_username": info.get("username"),
            "userissiteadmin": info.get("userissiteadmin"),
            "functions": sorted(f.get("name") for f in info.get("functions") or []),
        }, s))

    @dlt.resource(name="course_categories")
    def course_categories() -> Iterator[Any]:
        s = snap("course_categories")
        yield from _tables("course_categories")
        yield _to("course_categories", [stamp({k: c.get(k) for k in schema.TABLES["course_categories"]}, s)
                                        for c in s.categories()])

    @dlt.resource(name="courses")
    def courses() -> Iterator[Any]:
        s = snap("courses")
        yield from _tables("courses")
        yield _to("courses", [stamp({k: c.get(k) for k in schema.TABLES["courses"]}, s) for c in s.courses()])

    @dlt.resource(name="enrolments")
    def enrolments() -> Iterator[Any]:
        """Every pair seen this run; a pair missing from a later run's snapshot of its course was unenrolled.

        Moodle reports no unenrolment, so each course's snapshot time goes to `enrolment_snapshots`:
        a pair whose extracted_at is older than its course's snapshot is no longer enrolled.
        """
        s = snap("enrolments")
        yield from _tables("enrolments", "enrolment_snapshots", "access_gaps")
        for course_id, rows in s.enrolments().items():
            yield _to("enrolments", [stamp({
                "course_id": e.course_id, "user_id": e.user_id, "roles": ",".join(e.role_shortnames),
                "role_ids": ",".join(map(str, e.role_ids)), "is_student": e.is_student,
                "is_active": e.is_active, "lastaccess": e.lastaccess, "lastcourseaccess": e.lastcourseaccess,
                "group_ids": ",".join(map(str, e.group_ids)),
            }, s) for e in rows])
            yield _to("enrolment_snapshots", stamp({"course_id": course_id, "enrolled_count": len(rows)}, s))
        yield from gap_rows(s, settings.ENROLMENT_GAPS)

    @dlt.resource(name="users")
    def users() -> Iterator[Any]:
        """Full profiles, `user_batch_size` ids per POST (PHP's max_input_vars caps one request)."""
        s = snap("users")
        yield from _tables("users", "access_gaps")
        ids = s.user_ids()
        size = config.user_batch_size
        batches = [ids[i: i + size] for i in range(0, len(ids), size)]
        seen: Counter[str] = Counter()
        missing: List[int] = []
        students = s.student_ids()

        def fetch(batch: List[int]) -> List[dict]:
            return client.call(settings.FN_USERS_BY_FIELD, {"field": "id", "values": batch}) or []

        for batch, found in client.fan_out(batches, fetch):
            missing += sorted(set(batch) - {int(u["id"]) for u in found})
            seen.update(k for u in found if int(u["id"]) in students for k, v in u.items() if v is not None and v != "")
            yield _to("users", [stamp(_profile(u), s) for u in found])
        s.check_profiles(missing, seen, sum(1 for i in ids if i in students))
        yield from gap_rows(s, settings.PROFILE_GAPS)

    @dlt.resource(name="grades")
    def grades() -> Iterator[Any]:
        """Every graded user of a course in one call (userid=0), for courses with activity since the last run."""
        s = snap("grades")
        yield from _tables("grades")

        def fetch(course: dict) -> dict:
            return client.call(settings.FN_GRADE_ITEMS, {"courseid": course["id"], "userid": 0})

        for course, report in client.fan_out(s.changed_courses(), fetch):
            s.check_grade_report(course, report)
            rows = []
            for usergrade in report.get("usergrades") or []:
                for item in usergrade.get("gradeitems") or []:
                    rows.append(stamp({
                        "course_id": course["id"], "user_id": usergrade["userid"], "grade_item_id": item["id"],
                        **{k: item.get(k) for k in schema.TABLES["grades"] if k not in ("course_id", "user_id", "grade_item_id")},
                    }, s))
            if rows:
                yield _to("grades", rows)

    @dlt.resource(name="course_engagement")
    def course_engagement() -> Iterator[Any]:
        """Progress, completion and last access per active student enrolment: one call per changed student."""
        s = snap("course_engagement")
        yield from _tables("course_engagement", "access_gaps")
        selected = {c["id"] for c in s.courses()}
        student_pairs = {(e.user_id, e.course_id) for e in s.all_enrolments() if e.is_student}
        tracked = {c["id"] for c in s.courses() if c.get("enablecompletion")}
        progress_seen = tracked_rows = 0

        def fetch(user_id: int) -> List[dict]:
            return client.call(settings.FN_USERS_COURSES, {"userid": user_id, "returnusercount": 0}) or []

        for user_id, courses_of_user in client.fan_out(s.changed_students(), fetch):
            rows = [stamp({
                "user_id": user_id, "course_id": c["id"], "progress": c.get("progress"),
                "completed": c.get("completed"), "lastaccess": c.get("lastaccess"),
                "completionusertracked": c.get("completionusertracked"),
            }, s) for c in courses_of_user if c["id"] in selected and (user_id, c["id"]) in student_pairs]
            tracked_rows += sum(1 for r in rows if r["course_id"] in tracked)
            progress_seen += sum(1 for r in rows if r["course_id"] in tracked and r["progress"] is not None)
            if rows:
                yield _to("course_engagement", rows)
        s.check_progress(tracked_rows, progress_seen)
        yield from gap_rows(s, (settings.GAP_PROGRESS,))

    @dlt.resource(name="activity_completion")
    def activity_completion() -> Iterator[Any]:
        """One call per student and course, only where the student entered the course since the last run."""
        s = snap("activity_completion")
        yield from _tables("activity_completion")

        def fetch(e: Enrolment) -> dict:
            return client.call(settings.FN_ACTIVITIES_COMPLETION, {"courseid": e.course_id, "userid": e.user_id})

        for e, answer in client.fan_out(s.changed_student_pairs(), fetch):
            rows = [stamp({
                "user_id": e.user_id, "course_id": e.course_id,
                **{k: st.get(k) for k in schema.TABLES["activity_completion"] if k not in ("user_id", "course_id")},
            }, s) for st in answer.get("statuses") or []]
            if rows:
                yield _to("activity_completion", rows)

    @dlt.resource(name="course_contents")
    def course_contents() -> Iterator[Any]:
        """Sections to `course_sections`, activities to `course_modules`: the outline a phone shows offline."""
        s = snap("course_sections")
        yield from _tables("course_sections", "course_modules")

        def fetch(course: dict) -> List[dict]:
            return client.call(settings.FN_COURSE_CONTENTS, {
                "courseid": course["id"], "options": [{"name": "excludecontents", "value": 1}]}) or []

        for course, sections in client.fan_out(s.changed_courses(), fetch):
            section_rows, modules = [], []
            for section in sections:
                section_rows.append(stamp({
                    "id": section["id"], "course_id": course["id"], "section": section.get("section"),
                    "name": section.get("name"), "visible": section.get("visible"), "summary": section.get("summary"),
                    "module_count": len(section.get("modules") or []),
                }, s))
                for position, m in enumerate(section.get("modules") or []):
                    modules.append(stamp({
                        "id": m["id"], "course_id": course["id"], "section_id": section["id"], "position": position,
                        **{k: m.get(k) for k in ("instance", "modname", "name", "url", "visible", "uservisible",
                                                 "completion", "description")},
                    }, s))
            if section_rows:
                yield _to("course_sections", section_rows)
            if modules:
                yield _to("course_modules", modules)

    @dlt.resource(name="assignments")
    def assignments() -> Iterator[Any]:
        s = snap("assignments")
        yield from _tables("assignments")
        rows = [stamp(dict(a), s) for a in s.assignments()]
        if rows:
            yield _to("assignments", rows)

    @dlt.resource(name="assignment_submissions")
    def assignment_submissions() -> Iterator[Any]:
        """Submissions changed since each course's cursor: mod_assign_get_submissions filters on `since` itself.

        The cursor is per course (source state), not a dlt incremental: one site-wide cursor would hide a newly
        selected course's older submissions, and dlt's incremental drops rows below its stored value even when a
        full refresh asks Moodle for everything.
        """
        s = snap("assignment_submissions")
        yield from _tables("assignment_submissions")
        state = dlt.current.source_state()
        cursors: Dict[str, Any] = dict(state.get(SUBMISSION_SINCE_KEY) or {})  # other courses keep theirs
        previous = {} if config.full_refresh else {int(k): Cursor.from_state(v) for k, v in cursors.items()}

        def fetch(batch: Any) -> dict:
            since, _, assignment_ids = batch
            return client.call(settings.FN_SUBMISSIONS, {"assignmentids": assignment_ids, "since": since})

        batches = s.assignment_batches([c["id"] for c in s.courses()], {c: cur.since for c, cur in previous.items()})
        for (since, course_ids, _), answer in client.fan_out(batches, fetch):
            s.assignment_warnings(settings.FN_SUBMISSIONS, answer)
            seen_at_since = set().union(*(previous[c].ids for c in course_ids if c in previous)) if since else set()
            rows = []
            for assignment in answer.get("assignments") or []:
                for sub in assignment.get("submissions") or []:
                    if sub.get("timemodified") == since and sub["id"] in seen_at_since:
                        continue  # `since` is inclusive: the rows at the cursor's second came last run
                    rows.append(stamp({
                        "id": sub["id"], "assignment_id": assignment["assignmentid"],
                        **{k: sub.get(k) for k in ("userid", "groupid", "attemptnumber", "status", "gradingstatus",
                                                   "timecreated", "timemodified")},
                    }, s))
            # the batch's newest change: everything of these courses before it has now been seen
            cursor = Cursor.after(since, seen_at_since, rows, s.horizon)
            for cid in course_ids:
                cursors[str(cid)] = cursor.to_state()
            if rows:
                yield _to("assignment_submissions", rows)
        state[SUBMISSION_SINCE_KEY] = cursors

    @dlt.resource(name="assignment_user_flags")
    def assignment_user_flags() -> Iterator[Any]:
        """Extensions granted to students (a student's own later due date), for courses that changed."""
        s = snap("assignment_user_flags")
        yield from _tables("assignment_user_flags")
        changed = {c["id"] for c in s.changed_courses()}
        batches = [ids for _, _, ids in s.assignment_batches(sorted(changed), {})]

        def fetch(assignment_ids: List[int]) -> dict:
            return client.call(settings.FN_USER_FLAGS, {"assignmentids": assignment_ids})

        for _, answer in client.fan_out(batches, fetch):
            s.assignment_warnings(settings.FN_USER_FLAGS, answer)
            rows = [stamp({"assignment_id": a["assignmentid"], "user_id": f["userid"],
                           "extensionduedate": f.get("extensionduedate"), "locked": f.get("locked")}, s)
                    for a in answer.get("assignments") or [] for f in a.get("userflags") or []]
            if rows:
                yield _to("assignment_user_flags", rows)

    @dlt.resource(name="assignment_due_dates")
    def assignment_due_dates() -> Iterator[Any]:
        """Each active student's own dates (user and group overrides), only with due_date_overrides: Moodle has no
        call listing overrides before 5.x, so this is one mod_assign_get_participant call per student and assignment."""
        yield from _tables("assignment_due_dates")
        if not config.due_date_overrides:
            return
        s = snap("assignment_due_dates")
        changed = {c["id"] for c in s.changed_courses()}
        by_course: Dict[int, List[dict]] = {}
        for a in s.assignments():
            by_course.setdefault(a["course_id"], []).append(a)
        pairs = [(a, e) for cid in sorted(changed) for e in s.enrolments()[cid] if e.is_student and e.is_active
                 for a in by_course.get(cid, [])]

        def fetch(pair: Any) -> dict:
            return client.call(settings.FN_PARTICIPANT, {"assignid": pair[0]["id"], "userid": pair[1].user_id})

        rows = []
        for (a, e), got in client.fan_out(pairs, fetch):
            rows.append(stamp({"assignment_id": a["id"], "user_id": e.user_id, "duedate": got.get("duedate"),
                               "cutoffdate": got.get("cutoffdate"),
                               "allowsubmissionsfromdate": got.get("allowsubmissionsfromdate")}, s))
            if len(rows) >= 1000:
                yield _to("assignment_due_dates", rows)
                rows = []
        if rows:
            yield _to("assignment_due_dates", rows)

    users.add_map(readable.sms_phones(config.default_phone_region))
    names = readable.plain_names(lambda: config.language or holder["s"].site_info().get("lang"))
    for resource in (course_categories, courses, grades, course_contents, assignments):
        resource.add_map(names)
    return (site_info, course_categories, courses, enrolments, users, grades, course_engagement,
            activity_completion, course_contents, assignments, assignment_submissions, assignment_user_flags,
            assignment_due_dates)


def _profile(user: Dict[str, Any]) -> Dict[str, Any]:
    """The profile columns we keep; absent optional fields (Moodle omits empty or hidden ones) become NULL."""
    row = {k: user.get(k) for k in schema.TABLES["users"] if k != "customfields"}
    if row["suspended"] is not None:
        row["suspended"] = bool(row["suspended"])
    fields = user.get("customfields") or []
    row["customfields"] = {f.get("shortname"): f.get("value") for f in fields} if fields else None
    return row
