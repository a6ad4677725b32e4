"""Course progress, completion and last access of every enrolment, read in pages from one custom report.

Moodle has no web service that answers these for many students at once: `core_enrol_get_users_courses` answers one
student per call, 15,000 calls for a district. Since 4.1 an admin can build a custom report on the "Course
participants" source, and `core_reportbuilder_retrieve_report` pages it, thousands of (course, user) rows a call
(reportbuilder/classes/external/reports/retrieve.php). What that costs the connector, and how it is paid:

- Every cell is display text made for a person (custom_report_data_exporter: `$table->format_row`): the ids only in
  link HTML, progress through format::percent (format_float, the language's decimal separator), completion as the
  language's Yes/No (format::boolean_as_text), last access through userdate() in the reader's language and
  timezone, to the minute, or "Never" (course/classes/reportbuilder/local/entities/{completion,access}.php). The
  calls force English and UTC, and each run calibrates the report against a raw value: a few students' own
  `core_enrol_get_users_courses`. A report that does not read back as those values stops the run, saying why.
- Columns are found by their headings (the answer names no column otherwise): Moodle's English titles, or none of
  the five when an admin retitled them.
- The source joins course -> enrol instance -> user enrolment -> user, so a student enrolled twice (manual and
  self, a cohort sync) is two rows, and a course nobody is enrolled in one row with empty user cells. Rows are
  de-duplicated by (course, user).
- Offset paging over a report that changes underneath (an enrolment added or removed between two pages) shifts rows
  across pages: one is read twice, or one is never read. Every page reports `totalrowcount`; the read starts over
  when it moved, and an enrolment the report still lacks is read the old way, one student per call.
- A run reads the report only when its changed students hold a good share of the enrolments (worth_reading): the
  report costs Moodle every row's progress, a quiet day's few students' own calls cost it less.
- Progress for a course that does not track completion reads "0.0%" ((float) null, formatters/completion.php),
  where the per-student call says nothing: the course's own `enablecompletion` decides. Last access is to the minute:
  the enrolment read's own `lastcourseaccess` (to the second, same source row) wins when it says the same minute.
"""

from __future__ import annotations

import html
import logging
import re
from calendar import timegm
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from . import webservice
from .errors import MoodleAPIError, MoodleConfigError, MoodleRetryableAPIError

log = logging.getLogger(__name__)

# reportbuilder/classes/local/helpers/format.php, the sources' column titles (lang/en/*.php)
SOURCE = "core_course\\reportbuilder\\datasource\\participants"
COLUMNS = {  # what the connector reads -> the column's English title, as the report's heading
    "course": "Course full name with link",  # core_reportbuilder\local\entities\course coursefullnamewithlink
    "user": "Full name with link",  # core_reportbuilder\local\entities\user fullnamewithlink
    "progress": "Student progress",  # completion:progresspercent, lang/en/completion.php 'progress'
    "completed": "Completed",  # completion:completed, lang/en/completion.php 'completed'
    "lastaccess": "Last access to course",  # access:timeaccess, lang/en/moodle.php 'lastcourseaccess'
}
# moodlewssetting* of every report call (webservice/lib.php set_web_service_call_settings): English, UTC
FORCED = {"moodlewssettinglang": "en", "moodlewssettingtimezone": "UTC"}
YES, NO, NEVER = "Yes", "No", "Never"  # lang/en/moodle.php 'yes', 'no', 'never'
# lang/en/langconfig.php strftimedaydatetime '%A, %d %B %Y, %I:%M %p', day and hour without their leading zero
# (userdate's fixday/fixhour): "Monday, 3 March 2025, 2:05 PM". strptime takes one or two digits for both.
DATE_FORMAT = "%A, %d %B %Y, %I:%M %p"
_COURSE_LINK = re.compile(r'href="[^"]*/course/view\.php\?(?:[^"]*&(?:amp;)?)?id=(\d+)')
_USER_LINK = re.compile(r'href="[^"]*/user/(?:profile|view)\.php\?(?:[^"]*&(?:amp;)?)?id=(\d+)')
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)\s*%$")
MAX_READS = 3  # whole reads of a report whose row count keeps moving, before the rest is read student by student
CALIBRATION_STUDENTS = 5  # students' own answers a report is compared with, until one agrees
# the share of active student enrolments a run's changed students must hold for the report to be read (worth_reading)
REPORT_SHARE = 0.25


class ReportError(MoodleConfigError):
    """The configured report cannot be read as the connector needs: its id, audience, columns, language or
    timezone. Nothing of it was loaded; the message says what to change on the report or in the settings."""


@dataclass(frozen=True)
class ReportRow:
    course_id: int
    user_id: int
    progress: Optional[float]  # the percentage as shown, to one decimal
    completed: Optional[bool]  # None: the cell was empty
    lastaccess: Optional[int]  # Unix seconds, to the minute; None: "Never"


@dataclass
class ReportRead:
    rows: Dict[Tuple[int, int], ReportRow]  # (course id, user id) -> the row
    pages: int
    total: int  # totalrowcount of the last read: rows before de-duplication
    reads: int  # whole reads made (more than 1: the report moved while it was paged)
    moved: bool  # it still moved in the last read


def setting_name() -> str:
    from .config import env_name

    return env_name("participants_report_id")


def retrieve(client: webservice.Caller, report_id: int, page: int, perpage: int) -> Dict[str, Any]:
    """One page of the report, in English and UTC; Moodle's refusals as ReportError naming what to fix."""
    try:
        answer = client.call(webservice.FN_RETRIEVE_REPORT,
                             {"reportid": report_id, "page": page, "perpage": perpage, **FORCED})
    except MoodleRetryableAPIError:
        raise
    except MoodleAPIError as exc:
        raise _refused(report_id, exc) from None
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), dict):
        raise ReportError(f"Moodle answered report {report_id} without its data: set {setting_name()} to the id of a "
                          "custom report (Site administration > Reports > Report builder > Custom reports).")
    return answer


def _refused(report_id: int, exc: MoodleAPIError) -> ReportError:
    """manager::get_report_from_id reads the report MUST_EXIST (invalidrecord); permission::require_can_view_report
    refuses with one errorcode, errorreportview, whether custom reports are off, the role lacks
    moodle/reportbuilder:view, or the user is not in the audience (reportbuilder/classes/permission.php)."""
    where = "Site administration > Reports > Report builder > Custom reports"
    if exc.errorcode == "invalidrecord":
        what = f"there is no custom report {report_id}: check {setting_name()} against the id in {where}"
    elif exc.errorcode == "errorreportview":
        what = (f"Moodle does not let the connector's user view report {report_id}. Add the user to the report's audience "
                f"({where} > the report > Audience), check that custom reports are on (Site administration > Advanced "
                "features > Enable custom reports) and that the role has moodle/reportbuilder:view")
    else:
        what = f"Moodle answered {exc.errorcode}: {exc}"
    return ReportError(f"Cannot read the participants report ({setting_name()}={report_id}): {what}.")


class Columns:
    """Where each column the connector reads sits in a row, from the report's headings."""

    def __init__(self, report_id: int, answer: Mapping[str, Any]) -> None:
        details = answer.get("details") or {}
        source = details.get("source")
        if source and source != SOURCE:
            raise ReportError(
                f"Report {report_id} ({details.get('name')!r}) is built on {details.get('sourcename') or source}, not "
                f"on Course participants: create one on that source as the README says, and set {setting_name()} to "
                "its id.")
        headers = [html.unescape(str(h)).strip() for h in (answer.get("data") or {}).get("headers") or []]
        self.index: Dict[str, int] = {}
        for name, title in COLUMNS.items():
            if title in headers:
                self.index[name] = headers.index(title)
        missing = [COLUMNS[n] for n in COLUMNS if n not in self.index]
        if missing:
            raise ReportError(
                f"Report {report_id} lacks the column(s) {', '.join(repr(m) for m in missing)}, or shows them under "
                f"other headings (its headings, asked in English: {', '.join(repr(h) for h in headers) or 'none'}). "
                "Add the columns as the README lists them, and leave their headings as Moodle names them: the "
                "connector finds each column by its English title.")

    def rows(self, report_id: int, answers: Iterable[Mapping[str, Any]]) -> Dict[Tuple[int, int], ReportRow]:
        """The rows of these pages by (course, user), each pair once (a student enrolled twice is two rows)."""
        out: Dict[Tuple[int, int], ReportRow] = {}
        for answer in answers:
            for r in answer["data"].get("rows") or []:
                row = self.row(report_id, r.get("columns") or [])
                if row is not None:
                    out.setdefault((row.course_id, row.user_id), row)
        return out

    def row(self, report_id: int, cells: Sequence[Any]) -> Optional[ReportRow]:
        """The row as values; None for a row with no user (a course nobody is enrolled in)."""
        def cell(name: str) -> str:
            i = self.index[name]
            return str(cells[i]) if i < len(cells) and cells[i] is not None else ""

        user = _USER_LINK.search(cell("user"))
        course = _COURSE_LINK.search(cell("course"))
        if user is None or course is None:
            if cell("user").strip() == "":
                return None
            raise ReportError(f"Report {report_id}'s cells {cell('course')!r} / {cell('user')!r} carry no course or "
                              "user link: use the columns 'Course full name with link' and 'Full name with link'.")
        return ReportRow(int(course.group(1)), int(user.group(1)), _percent(report_id, cell("progress")),
                         _yes_no(report_id, cell("completed")), _minute(report_id, cell("lastaccess")))


def _not_english(report_id: int, what: str, cell: str) -> ReportError:
    return ReportError(
        f"Report {report_id}'s {what} {cell!r} is not what an English report in UTC shows, though the connector asks "
        "for English: the site answered in another language, or the column's format was changed. Check that the "
        "English language pack is installed and that the report's columns are Moodle's own (README, \"The "
        "participants report\").")


def _percent(report_id: int, cell: str) -> Optional[float]:
    text = html.unescape(re.sub(r"<[^>]*>", "", cell)).strip()
    if text == "":
        return None
    match = _PERCENT.match(text)
    if match is None:
        raise _not_english(report_id, "progress", cell)
    return float(match.group(1))


def _yes_no(report_id: int, cell: str) -> Optional[bool]:
    text = html.unescape(cell).strip()
    if text == "":
        return None
    if text not in (YES, NO):
        raise _not_english(report_id, "completion", cell)
    return text == YES


def _minute(report_id: int, cell: str) -> Optional[int]:
    text = html.unescape(cell).strip()
    if text in ("", NEVER):
        return None
    try:
        return timegm(datetime.strptime(text, DATE_FORMAT).timetuple())
    except ValueError:
        raise _not_english(report_id, "last access", cell) from None


def read(client: Any, report_id: int, page_size: int,
         fan_out: Callable[[Iterable[int], Callable[[int], Dict[str, Any]]], Iterable[Tuple[int, Dict[str, Any]]]],
         ) -> ReportRead:
    """Every row of the report, de-duplicated by (course, user). Page 0 first (the headings and the row count), the
    rest through `fan_out`; the read starts over, up to MAX_READS times, when a page's count differs from page 0's
    (rows moved between pages: one may have been skipped)."""
    result = ReportRead({}, 0, 0, 0, False)
    for attempt in range(1, MAX_READS + 1):
        first = retrieve(client, report_id, 0, page_size)
        columns = Columns(report_id, first)
        total = int(first["data"].get("totalrowcount") or 0)
        pages = max(1, -(-total // page_size))
        answers = [first] + [a for _, a in fan_out(range(1, pages),
                                                   lambda p: retrieve(client, report_id, p, page_size))]
        counts = {int(a["data"].get("totalrowcount") or 0) for a in answers}
        listed = sum(len(a["data"].get("rows") or []) for a in answers)
        rows = columns.rows(report_id, answers)
        moved = counts != {total} or listed != total
        result = ReportRead(rows, len(answers), total, attempt, moved)
        if not moved or attempt == MAX_READS:
            return result
        log.warning("Report %d changed while it was read (%d rows, then %s): reading it again.", report_id, total,
                    ", ".join(str(c) for c in sorted(counts - {total})) or f"{listed} listed")
    return result


@dataclass(frozen=True)
class Raw:
    """What core_enrol_get_users_courses says of one enrolment: the values the report's cells must read as."""

    progress: Optional[float]
    completed: Optional[bool]
    lastaccess: Optional[int]


def disagreement(row: ReportRow, raw: Raw, tracked: bool) -> Optional[str]:
    """Why `row` does not read as the raw values (None: it does). Percentages are shown to one decimal; times to
    the minute, in the report's timezone."""
    shown = row.progress if tracked else None
    if raw.progress is not None and (shown is None or abs(shown - raw.progress) > 0.05 + 1e-9):
        return f"progress reads {shown}% where Moodle's own value is {raw.progress:.4g}%"
    if tracked and raw.completed is not None and row.completed is not None and row.completed != raw.completed:
        return f"completion reads {row.completed} where Moodle's own value is {raw.completed}"
    if raw.lastaccess and row.lastaccess is not None and raw.lastaccess // 60 * 60 != row.lastaccess:
        hours = (row.lastaccess - raw.lastaccess // 60 * 60) / 3600
        return (f"last access reads {_utc(row.lastaccess)} where Moodle's own value is {_utc(raw.lastaccess)} "
                f"({hours:+.2g} h): the report's dates are not in UTC")
    if raw.lastaccess and row.lastaccess is None:  # (no raw value and a time shown: hidden from the call, not wrong)
        return f"last access reads {NEVER!r} where Moodle's own value is {_utc(raw.lastaccess)}"
    return None


def _utc(seconds: Optional[int]) -> str:
    return datetime.fromtimestamp(seconds or 0, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def calibrate(client: Any, report_id: int, rows: Mapping[Tuple[int, int], ReportRow],
              candidates: Sequence[Tuple[int, int]], tracked_courses: Iterable[int]) -> Optional[str]:
    """Compare the report with a few students' own answers (core_enrol_get_users_courses: raw numbers and Unix
    times); raise ReportError unless one agrees on every value, on a row with a last access when any has one (only
    such a row shows a wrong timezone). A student's answer may have moved since the report was read (a course
    opened, an activity completed in between), so up to CALIBRATION_STUDENTS are tried. Returns what was compared,
    None when no row could be."""
    tracked = set(tracked_courses)
    pairs = sorted((p for p in candidates if p in rows), key=lambda p: (rows[p].lastaccess is None, p[1], p[0]))
    dated = any(rows[p].lastaccess is not None for p in pairs)
    users = list(dict.fromkeys(user_id for _, user_id in pairs))[:CALIBRATION_STUDENTS]
    found: List[str] = []
    for user_id in users:
        own = {int(c["id"]): c for c in webservice.users_courses(client, user_id, with_counts=False) or []}
        for course_id in [c for c, u in pairs if u == user_id and c in own]:
            c, row = own[course_id], rows[(course_id, user_id)]
            why = disagreement(row, Raw(c.get("progress"), c.get("completed"), c.get("lastaccess")),
                               course_id in tracked)
            if why is None and (row.lastaccess is not None or not dated):
                return f"user {user_id} in course {course_id}"
            if why is not None:
                found.append(f"user {user_id} in course {course_id}: {why}")
    if not found:
        return None
    raise ReportError(
        f"Report {report_id} does not read back as Moodle's own values ({'; '.join(found[:3])}). The connector asks "
        "Moodle for English and UTC: a report that still differs has a changed column format, or the site forces a "
        "timezone (Site administration > Location > Force timezone) that the request cannot override. Fix the report "
        f"as the README says, or unset {setting_name()} to read engagement one student at a time.")


def one_decimal(progress: Optional[float]) -> Optional[float]:
    """A percentage as format_float(value, 1) shows it: PHP's round(), half away from zero on the decimal text."""
    if progress is None:
        return None
    return float(Decimal(repr(float(progress))).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def engagement_rows(read_rows: Mapping[Tuple[int, int], ReportRow], pairs: Iterable[Tuple[int, int]],
                    tracked_courses: Iterable[int], lastcourseaccess: Mapping[Tuple[int, int], Optional[int]],
                    ) -> Tuple[List[Dict[str, Any]], List[Tuple[int, int]]]:
    """course_engagement rows for these (course, user) pairs as the per-student call would give them, and the pairs
    the report lacks."""
    tracked = set(tracked_courses)
    out: List[Dict[str, Any]] = []
    missing: List[Tuple[int, int]] = []
    for pair in pairs:
        row = read_rows.get(pair)
        if row is None:
            missing.append(pair)
            continue
        course_id, user_id = pair
        on = course_id in tracked
        lastaccess = row.lastaccess
        exact = lastcourseaccess.get(pair)
        if exact and lastaccess is not None and exact // 60 * 60 == lastaccess:
            lastaccess = exact  # the same source row, to the second
        out.append({"user_id": user_id, "course_id": course_id, "progress": row.progress if on else None,
                    "completed": row.completed if on else None, "lastaccess": lastaccess,
                    "completionusertracked": on})
    return out, missing


def worth_reading(run: Any, students: Sequence[int]) -> bool:
    """Whether this run reads the report: when the changed students hold at least REPORT_SHARE of the selected
    courses' active student enrolments (a first run, a new term). Moodle computes every row's progress to answer the
    report, so on a quiet day the few changed students' own calls cost the site less, and are made instead."""
    if not students:
        return False
    wanted = set(students)
    active = [e.user_id for e in run.all_enrolments() if e.is_student and e.is_active]
    changed = sum(1 for user_id in active if user_id in wanted)
    chosen = changed >= REPORT_SHARE * len(active)
    log.info("Participants report %s: the %d changed students hold %d of %d active student enrolments.",
             "read" if chosen else "not read", len(wanted), changed, len(active))
    return chosen


def engagement(client: Any, run: Any, students: Sequence[int]) -> Tuple[List[Dict[str, Any]], List[int]]:
    """course_engagement rows of these students' active enrolments, from the participants report (read whole,
    calibrated), and the students it lacked rows for, to be read one call each. `run` is the extract's MoodleRun."""
    settings = run.settings
    report_id = int(settings.participants_report_id)
    webservice.require_functions(run.site_info(), "course_engagement", also=[webservice.FN_RETRIEVE_REPORT])
    wanted = set(students)
    # as core_enrol_get_users_courses lists a student's courses: hidden ones left out (enrol_get_users_courses, a
    # student lacking moodle/course:viewhiddencourses), though the report lists every course
    selected = {c["id"] for c in run.courses() if c.get("visible", 1)}
    pairs: List[Tuple[int, int]] = []
    exact: Dict[Tuple[int, int], Optional[int]] = {}
    for e in run.all_enrolments():
        if e.user_id in wanted and e.is_student and e.is_active and e.course_id in selected:
            pairs.append((e.course_id, e.user_id))
            exact[(e.course_id, e.user_id)] = e.lastcourseaccess
    tracked = [c["id"] for c in run.courses() if c.get("enablecompletion")]
    got = read(client, report_id, settings.report_page_size, client.fan_out)
    compared = calibrate(client, report_id, got.rows, pairs, tracked)
    rows, missing = engagement_rows(got.rows, pairs, tracked, exact)
    log.info("Participants report %d: %d rows in %d pages (%d read%s), calibrated on %s.", report_id, got.total,
             got.pages, got.reads, "s" if got.reads > 1 else "", compared or "no row")
    lacking = sorted({user_id for _, user_id in missing})
    if lacking:
        log.warning("Participants report %d lacks %d active enrolments of %d students%s: they are read one student "
                    "per call. Check the report's conditions (it must list every enrolment) and its audience.",
                    report_id, len(missing), len(lacking), " (it changed while it was read)" if got.moved else "")
    return rows, lacking
