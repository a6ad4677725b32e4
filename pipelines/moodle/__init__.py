"""dlt source for a Moodle site's web services: courses, enrolments, profiles, grades and engagement.

Every resource is a DuckDB table with a primary key, merged on re-run. Calls that fan out per course or
per student are made only where Moodle's access times say something may have changed (see snapshot.py),
and profiles are fetched in batches of ids, never one call per user.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Sequence

import dlt
from dlt.sources import DltResource

from . import settings
from .client import MoodleClient, RequestStats
from .config import MoodleSettings
from .snapshot import Enrolment, MoodleSnapshot

__all__ = ["moodle_source", "MoodleSettings", "RequestStats"]


def _cols(**types: str) -> Dict[str, Dict[str, Any]]:
    """Column hints, so a field Moodle leaves out of every row of a run still gets its column and type."""
    return {name: {"data_type": t, "nullable": True} for name, t in types.items()}


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
    request_stats: Any = None,
) -> Sequence[DltResource]:
    """Load a Moodle site.

    Args:
        base_url: the site root, e.g. https://moodle.school.org (config: sources.moodle.base_url).
        token: a web-service token (secret); or username + password + service, exchanged at login/token.php.
        course_ids / category_ids: limit the run to these courses, or to courses in these categories
            (sub-categories included).
        student_roles: role shortnames that make an enrolment a student's (default: student).
        max_concurrency: parallel requests to Moodle (2-4 is polite; Moodle has no rate limiter).
        full_refresh: ignore the activity watermark and re-fetch grades, completion and contents everywhere.
        request_stats: a RequestStats to count requests into (the CLI prints it).
    """
    config = MoodleSettings.build(
        base_url, token=token, username=username, password=password, course_ids=course_ids,
        category_ids=category_ids, student_roles=student_roles, service=service,
        max_concurrency=max_concurrency, page_size=page_size, user_batch_size=user_batch_size,
        request_timeout=request_timeout, max_attempts=max_attempts, backoff_factor=backoff_factor, max_retry_delay=max_retry_delay,
        allow_insecure_http=allow_insecure_http, full_refresh=full_refresh,
    )
    client = MoodleClient(config, stats=request_stats if isinstance(request_stats, RequestStats) else None)
    holder: Dict[str, MoodleSnapshot] = {}

    def snap(resource: str) -> MoodleSnapshot:
        """The run's shared snapshot, created on first use so it reads the pipeline's state."""
        if "s" not in holder:
            holder["s"] = MoodleSnapshot(client, config, dlt.current.source_state())
        holder["s"].require(resource)
        return holder["s"]

    def stamp(row: Dict[str, Any], s: MoodleSnapshot) -> Dict[str, Any]:
        row["extracted_at"] = s.extracted_at
        return row

    @dlt.resource(name="site_info", primary_key="siteurl", write_disposition="merge",
                  columns=_cols(release="text", version="text", sitename="text"))
    def site_info() -> Iterator[Dict[str, Any]]:
        s = snap("site_info")
        info = s.site_info()
        yield stamp({
            "siteurl": info.get("siteurl") or config.base_url,
            "sitename": info.get("sitename"),
            "release": info.get("release"),
            "version": str(info.get("version")) if info.get("version") is not None else None,
            "lang": info.get("lang"),
            "token_userid": info.get("userid"),
            "token_username": info.get("username"),
            "functions": sorted(f.get("name") for f in info.get("functions") or []),
        }, s)

    @dlt.resource(name="course_categories", primary_key="id", write_disposition="merge",
                  columns=_cols(idnumber="text", description="text", timemodified="bigint"))
    def course_categories() -> Iterator[Dict[str, Any]]:
        s = snap("course_categories")
        for c in s.categories():
            yield stamp({k: c.get(k) for k in (
                "id", "name", "idnumber", "description", "parent", "path", "depth", "coursecount", "visible",
                "timemodified")}, s)

    @dlt.resource(name="courses", primary_key="id", write_disposition="merge",
                  columns=_cols(idnumber="text", summary="text", enddate="bigint", lang="text"))
    def courses() -> Iterator[Dict[str, Any]]:
        s = snap("courses")
        for c in s.courses():
            yield stamp({k: c.get(k) for k in (
                "id", "shortname", "fullname", "displayname", "idnumber", "categoryid", "summary", "format",
                "startdate", "enddate", "visible", "timecreated", "timemodified", "enablecompletion",
                "showgrades", "lang")}, s)

    @dlt.resource(name="enrolments", primary_key=("course_id", "user_id"), write_disposition="merge")
    def enrolments() -> Iterator[Any]:
        """Every pair seen this run; a pair missing from a later run's snapshot of its course was unenrolled.

        Moodle reports no unenrolment, so each course's snapshot time goes to `enrolment_snapshots`:
        a pair whose extracted_at is older than its course's snapshot is no longer enrolled.
        """
        s = snap("enrolments")
        for course_id, rows in s.enrolments().items():
            for e in rows:
                yield stamp({
                    "course_id": e.course_id, "user_id": e.user_id, "roles": ",".join(e.role_shortnames),
                    "role_ids": ",".join(map(str, e.role_ids)), "is_student": e.is_student,
                    "is_active": e.is_active, "lastaccess": e.lastaccess, "lastcourseaccess": e.lastcourseaccess,
                }, s)
            yield dlt.mark.with_hints(
                stamp({"course_id": course_id, "enrolled_count": len(rows)}, s),
                dlt.mark.make_hints(table_name="enrolment_snapshots", primary_key="course_id", write_disposition="merge"),
                create_table_variant=True,
            )

    @dlt.resource(name="users", primary_key="id", write_disposition="merge",
                  columns=_cols(email="text", phone1="text", phone2="text", address="text", city="text",
                                country="text", idnumber="text", institution="text", department="text",
                                firstaccess="bigint", lastaccess="bigint", suspended="bool", auth="text",
                                customfields="json"))
    def users() -> Iterator[List[Dict[str, Any]]]:
        """Full profiles, `user_batch_size` ids per POST (PHP's max_input_vars caps one request)."""
        s = snap("users")
        ids = s.user_ids()
        size = config.user_batch_size
        batches = [ids[i: i + size] for i in range(0, len(ids), size)]

        def fetch(batch: List[int]) -> List[dict]:
            return client.call(settings.FN_USERS_BY_FIELD, {"field": "id", "values": batch}) or []

        for _, found in client.fan_out(batches, fetch):
            yield [stamp(_profile(u), s) for u in found]

    @dlt.resource(name="grades", primary_key=("course_id", "user_id", "grade_item_id"), write_disposition="merge",
                  columns=_cols(graderaw="double", gradeformatted="text", percentageformatted="text",
                                lettergradeformatted="text", grademin="double", grademax="double",
                                gradedategraded="bigint", gradedatesubmitted="bigint", itemname="text", categoryid="bigint",
                                itemmodule="text", cmid="bigint", feedback="text"))
    def grades() -> Iterator[List[Dict[str, Any]]]:
        """Every graded user of a course in one call (userid=0), for courses with activity since the last run."""
        s = snap("grades")

        def fetch(course: dict) -> dict:
            return client.call(settings.FN_GRADE_ITEMS, {"courseid": course["id"], "userid": 0})

        for course, report in client.fan_out(s.changed_courses(), fetch):
            rows = []
            for usergrade in report.get("usergrades") or []:
                for item in usergrade.get("gradeitems") or []:
                    rows.append(stamp({
                        "course_id": course["id"], "user_id": usergrade["userid"], "grade_item_id": item["id"],
                        **{k: item.get(k) for k in (
                            "itemname", "itemtype", "itemmodule", "iteminstance", "cmid", "categoryid",
                            "graderaw", "gradeformatted", "grademin", "grademax", "percentageformatted",
                            "lettergradeformatted", "gradedategraded", "gradedatesubmitted", "gradeishidden",
                            "feedback")},
                    }, s))
            if rows:
                yield rows

    @dlt.resource(name="course_engagement", primary_key=("user_id", "course_id"), write_disposition="merge",
                  columns=_cols(progress="double", completed="bool", lastaccess="bigint"))
    def course_engagement() -> Iterator[List[Dict[str, Any]]]:
        """Progress, completion and last access per active student enrolment: one call per changed student."""
        s = snap("course_engagement")
        selected = {c["id"] for c in s.courses()}
        student_pairs = {(e.user_id, e.course_id) for e in s.all_enrolments() if e.is_student}

        def fetch(user_id: int) -> List[dict]:
            return client.call(settings.FN_USERS_COURSES, {"userid": user_id, "returnusercount": 0}) or []

        for user_id, courses_of_user in client.fan_out(s.changed_students(), fetch):
            rows = [stamp({
                "user_id": user_id, "course_id": c["id"], "progress": c.get("progress"),
                "completed": c.get("completed"), "lastaccess": c.get("lastaccess"),
                "completionusertracked": c.get("completionusertracked"),
            }, s) for c in courses_of_user if c["id"] in selected and (user_id, c["id"]) in student_pairs]
            if rows:
                yield rows

    @dlt.resource(name="activity_completion", primary_key=("user_id", "cmid"), write_disposition="merge",
                  columns=_cols(timecompleted="bigint", overrideby="bigint"))
    def activity_completion() -> Iterator[List[Dict[str, Any]]]:
        """One call per student and course, only where the student entered the course since the last run."""
        s = snap("activity_completion")

        def fetch(e: Enrolment) -> dict:
            return client.call(settings.FN_ACTIVITIES_COMPLETION, {"courseid": e.course_id, "userid": e.user_id})

        for e, answer in client.fan_out(s.changed_student_pairs(), fetch):
            rows = [stamp({
                "user_id": e.user_id, "course_id": e.course_id,
                **{k: st.get(k) for k in ("cmid", "modname", "instance", "state", "timecompleted", "tracking",
                                          "overrideby", "hascompletion", "isautomatic", "uservisible")},
            }, s) for st in answer.get("statuses") or []]
            if rows:
                yield rows

    @dlt.resource(name="course_contents", primary_key="id", write_disposition="merge",
                  table_name="course_sections", columns=_cols(summary="text"))
    def course_contents() -> Iterator[Any]:
        """Sections to `course_sections`, activities to `course_modules`: the outline a phone shows offline."""
        s = snap("course_sections")

        def fetch(course: dict) -> List[dict]:
            return client.call(settings.FN_COURSE_CONTENTS, {
                "courseid": course["id"], "options": [{"name": "excludecontents", "value": 1}]}) or []

        module_hints = dlt.mark.make_hints(table_name="course_modules", primary_key="id", write_disposition="merge",
                                           columns=_cols(url="text", description="text"))
        for course, sections in client.fan_out(s.changed_courses(), fetch):
            modules = []
            for section in sections:
                yield stamp({
                    "id": section["id"], "course_id": course["id"], "section": section.get("section"),
                    "name": section.get("name"), "visible": section.get("visible"), "summary": section.get("summary"),
                    "module_count": len(section.get("modules") or []),
                }, s)
                for position, m in enumerate(section.get("modules") or []):
                    modules.append(stamp({
                        "id": m["id"], "course_id": course["id"], "section_id": section["id"], "position": position,
                        **{k: m.get(k) for k in ("instance", "modname", "name", "url", "visible", "uservisible",
                                                 "completion", "description")},
                    }, s))
            if modules:
                yield dlt.mark.with_hints(modules, module_hints, create_table_variant=True)

    @dlt.resource(name="assignments", primary_key="id", write_disposition="merge",
                  columns=_cols(duedate="bigint", cutoffdate="bigint", allowsubmissionsfromdate="bigint"))
    def assignments() -> Iterator[List[Dict[str, Any]]]:
        s = snap("assignments")
        yield [stamp(dict(a), s) for a in s.assignments()]

    @dlt.resource(name="assignment_submissions", primary_key="id", write_disposition="merge")
    def assignment_submissions(
        timemodified: dlt.sources.incremental[int] = dlt.sources.incremental("timemodified", initial_value=0),
    ) -> Iterator[List[Dict[str, Any]]]:
        """Submissions changed since the last run: mod_assign_get_submissions filters on `since` itself."""
        s = snap("assignment_submissions")
        since = 0 if config.full_refresh else int(timemodified.last_value or 0)
        ids = [a["id"] for a in s.assignments()]
        size = settings.DEFAULT_ASSIGNMENT_BATCH_SIZE
        batches = [ids[i: i + size] for i in range(0, len(ids), size)]

        def fetch(batch: List[int]) -> dict:
            return client.call(settings.FN_SUBMISSIONS, {"assignmentids": batch, "since": since})

        for _, answer in client.fan_out(batches, fetch):
            rows = []
            for assignment in answer.get("assignments") or []:
                for sub in assignment.get("submissions") or []:
                    rows.append(stamp({
                        "id": sub["id"], "assignment_id": assignment["assignmentid"],
                        **{k: sub.get(k) for k in ("userid", "attemptnumber", "status", "gradingstatus",
                                                   "timecreated", "timemodified", "latest")},
                    }, s))
            if rows:
                yield rows

    return (site_info, course_categories, courses, enrolments, users, grades, course_engagement,
            activity_completion, course_contents, assignments, assignment_submissions)


def _profile(user: Dict[str, Any]) -> Dict[str, Any]:
    """The profile columns we keep; absent optional fields (Moodle omits empty ones) become NULL."""
    row = {k: user.get(k) for k in (
        "id", "username", "firstname", "lastname", "fullname", "email", "phone1", "phone2", "address", "city",
        "country", "idnumber", "institution", "department", "firstaccess", "lastaccess", "auth", "suspended",
        "confirmed", "lang", "timezone")}
    if row["suspended"] is not None:
        row["suspended"] = bool(row["suspended"])
    fields = user.get("customfields") or []
    row["customfields"] = {f.get("shortname"): f.get("value") for f in fields} if fields else None
    return row
