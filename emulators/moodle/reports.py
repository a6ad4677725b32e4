r"""Custom reports on the "Course participants" source, as core_reportbuilder_retrieve_report answers them (4.1+).

Read in moodle/moodle. The stored trees used: for 4.5 a 4.5.6 checkout (version.php 2024100706.00, repository
paulkennethsq1/hrsq1 in the search index), for 4.1 a 4.1+ fork (2022112800.01, sergeinack3/PowerEduc: Moodle renamed,
logic untouched); where a file was only stored once in moodle/moodle its stored version is named. Paths are Moodle's.

The call (reportbuilder/classes/external/reports/retrieve.php): parameters reportid (PARAM_INT, required), page
(default 0), perpage (default 10, no maximum); then manager::get_report_from_id() (`new report($id)`: a persistent's
read() with MUST_EXIST, so an unknown id is dml_missing_record_exception invalidrecord "Can't find data record in
database table reportbuilder_report."; an id <= 0 reads nothing and fails in PHP with a TypeError, source null), then
validate_context(system), then permission::require_can_view_report() (reportbuilder/classes/permission.php): false
without $CFG->enablecustomreports or any of moodle/reportbuilder:edit|editall|view|viewall (lib/db/access.php gives
'view' to every authenticated user, 'edit' to managers, 'viewall' and 'editall' to nobody); true with viewall, or when
the user may edit it (its creator with edit/editall, anyone with editall), or is in its audience
(local/helpers/audience::user_reports_list); otherwise report_access_exception('errorreportview'), a moodle_exception
of module 'reportbuilder' whose class name is namespaced in both versions: core_reportbuilder\exception\
report_access_exception, message get_string('errorreportview', 'reportbuilder') in the current language ("You cannot
view this report"). A site admin passes every capability check.

The answer: {details, data, warnings: []}. details is custom_report_details_exporter: the report persistent's
properties (local/models/report.php, both versions: name, source, type, uniquerows, conditiondata, settingsdata,
contextid, component, area, itemid, usercreated, then persistent's id, timecreated, timemodified, usermodified), the
name through external_format_string (exporter.php: PARAM_TEXT properties), then sourcename (the source's get_name() in
the current language: get_string('courseparticipants', 'course')) and modifiedby (user_summary_exporter of
core_user::get_user(usermodified): id, email, idnumber, phone1, phone2, department, institution, fullname, identity =
the non-empty $CFG->showuseridentity fields joined with ', ', profileurl, profileimageurl (.../u/f1),
profileimageurlsmall (.../u/f2)). conditiondata is json_encode of the condition values
(base::set_condition_values): a report made with the default setup holds "[]" on 4.1 (participants sets no values)
and {"enrolment:status_operator":1,"enrolment:status_value":0} on 4.5 (get_default_condition_values).

data is custom_report_data_exporter over custom_report_table_view (table/custom_report_table.php, base_report_table.php):
headers are each column's custom heading through format_string (column model get_formatted_heading: shown as typed,
never translated; '&' escaped) or else its title in the current language; rows are format_row(): each column's
callbacks over its fields, every cell display text; totalrowcount is count_records_sql(countsql), a COUNT over the same
FROM/WHERE/GROUP BY. Rows are read with LIMIT perpage OFFSET page*perpage (set_page_number(page + 1),
get_page_start()); the DML layer turns a negative offset or limit into 0, and a limit of 0 means no limit, so
perpage=0 answers every row. "Show unique rows" (uniquerows) groups by every column's fields (GROUP BY), so rows
collapse only where all the columns' underlying fields are equal; it has no effect when a column is aggregated (not
modelled here: no aggregation). The sort is the report's sort columns in their sort order (get_sort_columns: sortable
columns with sortenabled, by sortorder), each by its sort fields (the full name columns by firstname then lastname);
rows equal on every sort key come in no defined order from SQL (so may move between pages): here they keep the source's
own order (course id, enrol instance id, user id). NULLs sort as PostgreSQL sorts them (last ascending, first
descending); strings compare by code point, as a C collation would (a database collation may order accents and case
differently).

The source (course/classes/reportbuilder/datasource/participants.php): course (site course excluded) JOIN its category,
LEFT JOIN enrol instances, LEFT JOIN user_enrolments, LEFT JOIN user (deleted = 0), LEFT JOIN course_completions and
user_lastaccess on (course, user). One row per user enrolment, so a user enrolled through two instances is two rows,
and an instance nobody is enrolled through (the guest instance every course gets) is one row with every user cell
empty. Default setup (get_default_conditions): 4.1 adds conditions user:suspended and user:confirmed with no value,
which filter nothing (boolean_select: ANY_VALUE adds no SQL); 4.5 adds enrolment:status first and sets it to "Active"
(select EQUAL_TO status_field::STATUS_ACTIVE): the enrolment status expression is NULL without a user enrolment,
1 (suspended) for a suspended one, 2 (not current) for an active one that has not started, has ended or whose instance
is disabled, else 0; so on 4.5 the default report drops suspended and not-current enrolments and the empty rows.

Columns modelled (title strings: lang/en and the fr language pack, as shipped by AMOS):
- course:coursefullnamewithlink (reportbuilder/classes/local/entities/course.php, both versions):
  html_writer::link(course_get_url(id), format_string(fullname)): <a href="{wwwroot}/course/view.php?id=N">Name</a>,
  the name with '&' as '&amp;' and tags stripped (multilang only with $CFG->filterall); sorted by c.fullname.
- user:fullnamewithlink (entities/user.php): '' without a user, else <a href="{wwwroot}/user/profile.php?id=N">First
  Last</a>, fullname() not escaped; sorted by firstname, lastname.
- completion:progresspercent (course/classes/reportbuilder/local/entities/completion.php, formatters/completion.php):
  '' without a user, else format::percent((float) progress::get_course_progress_percentage()): format_float(value, 1)
  with the language's decsep, then get_string('percents') ('{$a}%' in English, '{$a} %' in French); null (completion
  off, the user not tracked: no active student enrolment, no tracked activity) is (float)null = 0.0, so "0.0%". The
  number is core_enrol_get_users_courses' progress (api.py users_courses) for a tracked student. Not sortable.
- completion:completed: from course_completions.timecompleted. 4.1: CASE timecompleted > 0 THEN 1 ELSE 0, '' without
  a user, else Yes/No; 4.5: CASE id IS NULL THEN NULL ..., format::boolean_as_text(): '' without a course_completions
  row. Here a row exists for every student enrolled in a course that tracks completion, completed when every tracked
  activity is (as users_courses' `completed`).
- access:timeaccess (entities/access.php): '' without a user, get_string('never') without a user_lastaccess row, else
  format::userdate() = userdate($value) to the minute in the current language and the user's timezone.
- enrolment:method (entities/enrolment.php; deprecated in 4.3 for enrol:name, still answered in 4.5): the enrol
  plugin's get_instance_name(): get_string('pluginname', 'enrol_x'), the self plugin adding its role in brackets.

userdate() (lib/moodlelib.php -> calendar/type/gregorian/classes/structure.php timestamp_to_date_string, both versions):
the format is get_string('strftimedaydatetime', 'langconfig'): '%A, %d %B %Y, %I:%M %p' (en), '%A %d %B %Y, %H:%M'
(fr); %d and %I are first replaced by DD and HH, and after formatting DD becomes the day and HH the 12-hour hour, each
without a leading zero (ltrim(str_replace([' 0', ' '], '', date(' d')))). date_format_string() formats with
core_date::strftime() (lib/classes/date.php, 4.1 and 4.5: ICU day and month names of get_string('locale',
'langconfig'), en_AU / fr_FR: "Monday", "September", "lundi", "septembre"; %p is PHP's date('A'), AM/PM, or the
langconfig's amcaps/pmcaps, the same letters). The timezone is core_date::get_user_timezone(99): $CFG->forcetimezone
when set (not 99), else $USER->timezone, which webservice_base_server::run() (webservice/lib.php, 4.1 and 4.5) has
replaced with moodlewssettingtimezone when that is non-empty and the site does not force one; a user timezone of 99 is
the server's ($CFG->timezone, or PHP's when that is 99); an unknown zone is normalised (numeric offsets to Etc/GMT-n,
the rest to $CFG->timezone). moodlewssettingtimezone is one of the five settings set_web_service_call_settings() takes
out of the request in both versions (PARAM_TIMEZONE; a value it rejects becomes '' and changes nothing), so it never
reaches validate_parameters. A setting the version does not know would stay among the function's parameters and fail
validate_parameters with invalidparameter "Unexpected keys (...) detected in parameter array." (not modelled: the
server strips every moodlews* name).

Strings exist here for English and French; another installed language (sw) shows the English strings and names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple
from zoneinfo import ZoneInfo, available_timezones

from .access import TokenUser
from .school import ADMIN_ID, ENROL_INSTANCE_DISABLED, Course, EnrolInstance, School, User
from .site import SiteConfig, multilang

PARTICIPANTS = "core_course\\reportbuilder\\datasource\\participants"
TYPE_CUSTOM_REPORT = 0  # core_reportbuilder\local\report\base::TYPE_CUSTOM_REPORT
SORT_ASC, SORT_DESC = 4, 3  # PHP's SORT_ASC / SORT_DESC, as column sortdirection stores them
SYSTEM_CONTEXT_ID = 1
# core_user\output\status_field: the enrolment:status values
STATUS_ACTIVE, STATUS_SUSPENDED, STATUS_NOT_CURRENT = 0, 1, 2
SELECT_EQUAL_TO = 1  # core_reportbuilder\local\filters\select::EQUAL_TO
BOOLEAN_CHECKED, BOOLEAN_NOT_CHECKED = 1, 2  # filters\boolean_select

# (component string file: key) -> text. English from lang/en (moodle.php, completion.php, reportbuilder.php, course.php,
# enrol.php, langconfig.php, enrol/*/lang/en); French from the fr language pack (AMOS, as projectestac/odissea ships it).
STRINGS: Dict[str, Dict[str, str]] = {
    "en": {
        "yes": "Yes", "no": "No", "never": "Never", "percents": "{$a}%",
        "coursefullnamewithlink": "Course full name with link",  # core_reportbuilder
        "userfullnamewithlink": "Full name with link",  # core_reportbuilder
        "progress": "Student progress",  # completion ('progress', both versions)
        "completed": "Completed",  # completion
        "lastcourseaccess": "Last access to course",  # moodle
        "method": "Method",  # enrol
        "courseparticipants": "Course participants",  # course
        "errorreportview": "You cannot view this report",  # core_reportbuilder
        "enrol_manual": "Manual enrolments", "enrol_guest": "Guest access", "enrol_self": "Self enrolment",
        "defaultcoursestudent": "Student",  # moodle: role_get_name() of the student archetype without a custom name
    },
    "fr": {
        "yes": "Oui", "no": "Non", "never": "Jamais",
        "percents": "{$a} %",  # the pack's space; whether it is a no-break space could not be read from the copy
        "coursefullnamewithlink": "Nom complet du cours avec lien", "userfullnamewithlink": "Nom complet avec lien",
        "progress": "Suivi des activités des participants", "completed": "Terminé",
        "lastcourseaccess": "Dernier accès au cours", "method": "Méthode", "courseparticipants": "Participants au cours",
        "errorreportview": "Vous ne pouvez pas consulter ce rapport",
        "enrol_manual": "Inscription manuelle", "enrol_guest": "Accès anonyme", "enrol_self": "Auto-inscription",
        "defaultcoursestudent": "Étudiant",
    },
}
# langconfig.php: decsep, strftimedaydatetime; the ICU names of its 'locale' (en_AU.UTF-8, fr_FR.UTF-8)
LANGCONFIG: Dict[str, Dict[str, str]] = {
    "en": {"decsep": ".", "strftimedaydatetime": "%A, %d %B %Y, %I:%M %p"},
    "fr": {"decsep": ",", "strftimedaydatetime": "%A %d %B %Y, %H:%M"},
}
DAYS = {"en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
        "fr": ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"]}
MONTHS = {"en": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
                 "November", "December"],
          "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
                 "novembre", "décembre"]}


def get_string(key: str, lang: str) -> str:
    """A string in the language, English where the emulator holds none for it (Moodle falls back to English too)."""
    return STRINGS.get(lang, {}).get(key) or STRINGS["en"][key]


def _langconfig(key: str, lang: str) -> str:
    return LANGCONFIG.get(lang, LANGCONFIG["en"])[key]


# ---------------------------------------------------------------------------------------------- numbers and dates
def format_float(value: float, lang: str, decimalpoints: int = 1) -> str:
    """format_float() (lib/moodlelib.php): number_format($float, 1, decsep, ''), rounding half away from zero as PHP's
    round() does on the shortest decimal form of the double (12.25 -> 12.3, where Python's round() gives 12.2)."""
    quantum = Decimal(1).scaleb(-decimalpoints)
    text = f"{Decimal(repr(float(value))).quantize(quantum, rounding=ROUND_HALF_UP):f}"
    return text.replace(".", _langconfig("decsep", lang))


def percent(value: Optional[float], lang: str) -> str:
    """format::percent() (reportbuilder/classes/local/helpers/format.php): get_string('percents', format_float())."""
    return "" if value is None else get_string("percents", lang).replace("{$a}", format_float(value, lang))


def boolean_as_text(value: Optional[bool], lang: str) -> str:
    """format::boolean_as_text(): '' for null, else get_string('yes') / get_string('no')."""
    return "" if value is None else get_string("yes" if value else "no", lang)


def _loose_99(tz: Any) -> bool:
    """PHP's `$tz == 99` on a string: numeric strings compare as numbers ('99', '99.0')."""
    try:
        return float(str(tz).strip()) == 99
    except ValueError:
        return False


def _is_numeric(tz: str) -> bool:
    try:
        float(tz)
        return True
    except ValueError:
        return False


@lru_cache(maxsize=1)
def _zones() -> FrozenSet[str]:
    return frozenset(available_timezones())


def _legacy_zone(tz: str) -> Optional[str]:
    """core_date::$badzones for numbers and UTC/GMT offsets (lib/classes/date.php init_zones): whole hours -12..14 to
    Etc/GMT-n (sign reversed), the four half-hour offsets to a city; another number is first cut to an integer
    ((string)(int)$tz)."""
    halves = {"4.5": "Asia/Kabul", "5.5": "Asia/Kolkata", "6.5": "Asia/Rangoon", "9.5": "Australia/Darwin"}
    if tz in halves:
        return halves[tz]
    named = re.fullmatch(r"(?:UTC|GMT)([+-]\d{1,2})?", tz)
    if named:
        hours = int(named.group(1) or 0)
    elif _is_numeric(tz):
        hours = int(float(tz))
    else:
        return None
    if not -12 <= hours <= 14:
        return None
    return "Etc/GMT" if hours == 0 else f"Etc/GMT{'+' if hours < 0 else '-'}{abs(hours)}"


def normalise_timezone(tz: str, site: SiteConfig) -> str:
    """core_date::normalise_timezone(): a known zone as it is, a legacy one mapped, else $CFG->timezone when it is a
    usable name, else PHP's default."""
    if tz in _zones():
        return tz
    legacy = _legacy_zone(tz)
    if legacy is not None and legacy in _zones():
        return legacy
    if not _is_numeric(site.timezone) and site.timezone in _zones():
        return site.timezone
    return site.php_timezone


def server_timezone(site: SiteConfig) -> str:
    """core_date::get_server_timezone(): $CFG->timezone, PHP's own when it is 99 or empty."""
    if site.timezone == "" or _loose_99(site.timezone):
        return site.php_timezone
    return normalise_timezone(site.timezone, site)


def user_timezone(site: SiteConfig, profile_timezone: str, setting: str = "") -> str:
    """The zone userdate() uses in a web-service call: forcetimezone, else the token user's timezone (replaced by a
    non-empty moodlewssettingtimezone in run(); PHP's empty() also skips '0'), 99 meaning the server's."""
    if not _loose_99(site.forcetimezone):
        return normalise_timezone(site.forcetimezone, site)
    tz = setting if setting not in ("", "0") else profile_timezone
    return server_timezone(site) if _loose_99(tz) else normalise_timezone(str(tz), site)


def _strftime(fmt: str, when: datetime, lang: str) -> str:
    """core_date::strftime() for the conversions the langconfig formats use."""
    names = {"A": lambda: DAYS.get(lang, DAYS["en"])[when.weekday()],
             "B": lambda: MONTHS.get(lang, MONTHS["en"])[when.month - 1],
             "Y": lambda: str(when.year), "d": lambda: f"{when.day:02d}", "H": lambda: f"{when.hour:02d}",
             "I": lambda: when.strftime("%I"), "M": lambda: f"{when.minute:02d}",
             "p": lambda: "AM" if when.hour < 12 else "PM", "%": lambda: "%"}
    return re.sub(r"%(.)", lambda m: names[m.group(1)](), fmt)


def userdate(timestamp: int, lang: str, tz: str) -> str:
    """userdate($timestamp) with the default format, fixday and fixhour (see the module docstring)."""
    fmt = _langconfig("strftimedaydatetime", lang).replace("%d", "DD").replace("%I", "HH")
    when = datetime.fromtimestamp(timestamp, ZoneInfo(tz))
    out = _strftime(fmt, when, lang)
    return out.replace("DD", str(when.day)).replace("HH", str(int(when.strftime("%I"))))


def format_string(text: str, site: SiteConfig, lang: str) -> str:
    """format_string() as a report callback calls it (lib/classes/formatting.php), not the web-service variant: '&'
    escaped, filters when $CFG->filterall (moodlewssettingfilter does not reach it), tags stripped."""
    out = re.sub(r"&(?![a-zA-Z0-9#]{1,8};)", "&amp;", text)
    if site.filterall and site.multilang_filter:
        out = multilang(out, lang)
    if site.formatstringstriptags:
        out = re.sub(r"<[^>]*>", "", out).replace("<", "&lt;").replace(">", "&gt;")
    return out


# ---------------------------------------------------------------------------------------------- the source's rows
@dataclass(frozen=True)
class Row:
    """One row of the participants source before its columns format it: course, enrol instance (None: the course has
    none), user (None: nobody enrolled through the instance) and that user enrolment's status and start."""

    course: Course
    instance: Optional[EnrolInstance]
    user: Optional[User]
    ue_active: bool = False
    ue_timestart: int = 0


def source_rows(school: School) -> List[Row]:
    """The FROM of participants: courses by id, each LEFT JOIN enrol (by id) LEFT JOIN user_enrolments (by user)."""
    rows: List[Row] = []
    for cid in sorted(school.courses):
        course = school.courses[cid]
        instances = school.enrol_instances.get(cid) or []
        if not instances:
            rows.append(Row(course, None, None))
        for instance in instances:
            users = school.instance_users(instance)
            if not users:
                rows.append(Row(course, instance, None))
            for uid, active, timestart in users:
                rows.append(Row(course, instance, school.users[uid], active, timestart))
    return rows


def enrolment_status(row: Row, now: int) -> Optional[int]:
    """The enrolment entity's status expression (course/classes/reportbuilder/local/entities/enrolment.php)."""
    if row.user is None or row.instance is None:
        return None
    if not row.ue_active:
        return STATUS_SUSPENDED
    if row.ue_timestart > now or row.instance.status == ENROL_INSTANCE_DISABLED:
        return STATUS_NOT_CURRENT  # timeend is never set here
    return STATUS_ACTIVE


@dataclass
class Context:
    """What formatting a report needs: the school, the site, the current language and timezone, $CFG->wwwroot."""

    school: School
    site: SiteConfig
    lang: str
    tz: str
    wwwroot: str
    # one call's course completions by (course, user): unique rows and sorting read them for every row of the report
    completions: Dict[Tuple[int, int], Optional[bool]] = field(default_factory=dict)

    def course_completion(self, course_id: int, user_id: int) -> Optional[bool]:
        """course_completions for (course, user): None without a row, else whether timecompleted is set (see the
        module docstring: every tracked activity complete, as api.py users_courses computes `completed`)."""
        key = (course_id, user_id)
        if key not in self.completions:
            self.completions[key] = self._course_completion(course_id, user_id)
        return self.completions[key]

    def _course_completion(self, course_id: int, user_id: int) -> Optional[bool]:
        s = self.school
        course, e = s.courses[course_id], s.enrolments[course_id].get(user_id)
        if not course.enablecompletion or e is None or e.role != "student":
            return None
        tracked = [m for m in s.modules[course_id] if m.completion]
        done = sum(1 for m in tracked if s.completion(m, user_id)[0] in (1, 2))
        return bool(tracked) and done == len(tracked)

    def progress(self, course_id: int, user_id: int) -> Optional[float]:
        """core_completion\\progress::get_course_progress_percentage() (completion/classes/progress.php): null unless
        completion is on and the user is tracked (is_tracked_user: an active enrolment and
        moodle/course:isincompletionreports, a student); 100 when the course is complete; null without tracked
        activities; else the share of them complete (pass counts, fail does not) times 100."""
        s = self.school
        course, e = s.courses[course_id], s.enrolments[course_id].get(user_id)
        if not course.enablecompletion or e is None or not e.active or e.role != "student":
            return None
        if self.course_completion(course_id, user_id):
            return 100.0
        tracked = [m for m in s.modules[course_id] if m.completion]
        if not tracked:
            return None
        return sum(1 for m in tracked if s.completion(m, user_id)[0] in (1, 2)) / len(tracked) * 100.0

    def lastaccess(self, course_id: int, user_id: int) -> Optional[int]:
        """user_lastaccess.timeaccess: none before the first visit, and none once unenrolled (unenrol's cleanup)."""
        e = self.school.enrolments[course_id].get(user_id)
        return e.lastcourseaccess if e is not None and e.lastcourseaccess else None


@dataclass(frozen=True)
class ColumnSpec:
    """A column of the participants source: its title string, its fields (what GROUP BY compares for unique rows),
    its sort key (None: not sortable) and its callbacks."""

    title: str
    fields: Callable[[Row, Context], Tuple[Any, ...]]
    sort: Optional[Callable[[Row, Context], Tuple[Any, ...]]]
    format: Callable[[Row, Context], str]


def _uid(row: Row) -> Optional[int]:
    return row.user.id if row.user is not None else None


def _course_link(row: Row, ctx: Context) -> str:
    c = row.course
    return (f'<a href="{ctx.wwwroot}/course/view.php?id={c.id}">'
            f"{format_string(c.fullname, ctx.site, ctx.lang)}</a>")


def _user_link(row: Row, ctx: Context) -> str:
    if row.user is None:
        return ""
    return f'<a href="{ctx.wwwroot}/user/profile.php?id={row.user.id}">{row.user.fullname}</a>'


def _progress(row: Row, ctx: Context) -> str:
    if row.user is None:
        return ""
    value = ctx.progress(row.course.id, row.user.id)
    return percent(0.0 if value is None else value, ctx.lang)  # (float) null


def _completed_value(row: Row, ctx: Context) -> Optional[int]:
    """The SQL value of completion:completed: 4.1 CASE timecompleted > 0 THEN 1 ELSE 0 (0 without a row); 4.5 NULL
    without a course_completions row."""
    done = None if row.user is None else ctx.course_completion(row.course.id, row.user.id)
    if ctx.site.at_least("4.5"):
        return None if done is None else int(done)
    return int(bool(done))


def _completed(row: Row, ctx: Context) -> str:
    value = _completed_value(row, ctx)
    if not ctx.site.at_least("4.5") and row.user is None:
        return ""  # 4.1's callback: if (!$row->userid) return ''
    return boolean_as_text(None if value is None else bool(value), ctx.lang)


def _timeaccess_value(row: Row, ctx: Context) -> Optional[int]:
    return None if row.user is None else ctx.lastaccess(row.course.id, row.user.id)


def _timeaccess(row: Row, ctx: Context) -> str:
    if row.user is None:
        return ""
    value = _timeaccess_value(row, ctx)
    return get_string("never", ctx.lang) if value is None else userdate(value, ctx.lang, ctx.tz)


def _method(row: Row, ctx: Context) -> str:
    """enrolment_formatter::enrolment_name(): '' without an instance, else enrol_plugin::get_instance_name(): the
    plugin's name; enrol_self adds ' (' . role_get_name($role) . ')' (enrol/self/lib.php)."""
    instance = row.instance
    if instance is None:
        return ""
    name = get_string(f"enrol_{instance.enrol}", ctx.lang)
    if instance.enrol == "self" and instance.roleid:
        name += f" ({get_string('defaultcoursestudent', ctx.lang)})"
    return name


COLUMNS: Dict[str, ColumnSpec] = {
    "course:coursefullnamewithlink": ColumnSpec(
        "coursefullnamewithlink", lambda r, c: (r.course.fullname, r.course.id), lambda r, c: (r.course.fullname,),
        _course_link),
    "user:fullnamewithlink": ColumnSpec(
        "userfullnamewithlink",
        lambda r, c: (r.user.firstname, r.user.lastname, r.user.id) if r.user else (None, None, None),
        lambda r, c: (r.user.firstname, r.user.lastname) if r.user else (None, None), _user_link),
    "completion:progresspercent": ColumnSpec(
        "progress", lambda r, c: (r.course.id, _uid(r)), None, _progress),
    "completion:completed": ColumnSpec(
        "completed",
        lambda r, c: (_completed_value(r, c),) if c.site.at_least("4.5") else (_completed_value(r, c), _uid(r)),
        lambda r, c: (_completed_value(r, c),), _completed),
    "access:timeaccess": ColumnSpec(
        "lastcourseaccess", lambda r, c: (_timeaccess_value(r, c), _uid(r)), lambda r, c: (_timeaccess_value(r, c),),
        _timeaccess),
    "enrolment:method": ColumnSpec(
        "method", lambda r, c: (r.instance.enrol, r.instance.id) if r.instance else (None, None),
        lambda r, c: (r.instance.enrol if r.instance else None,), _method),
}


# ---------------------------------------------------------------------------------------------- report definitions
@dataclass
class ReportColumn:
    """A reportbuilder_column row: the column's unique identifier and its custom heading ('' = the title)."""

    uniqueidentifier: str
    heading: str = ""


@dataclass
class CustomReport:
    """A reportbuilder_report row (type custom) with its columns, sorting, conditions and audience of user ids."""

    id: int
    name: str
    columns: List[ReportColumn]
    sort: List[Tuple[str, int]]  # (column unique identifier, SORT_ASC or SORT_DESC), in sort order
    uniquerows: bool
    audience: FrozenSet[int]
    conditions: Dict[str, Any]  # condition unique identifier -> its value, None where it filters nothing
    timecreated: int
    timemodified: int
    usercreated: int = ADMIN_ID
    usermodified: int = ADMIN_ID
    source: str = PARTICIPANTS
    conditiondata: Optional[str] = None


def default_conditions(site: SiteConfig) -> Dict[str, Any]:
    """The conditions "Include default setup" adds (participants::get_default_conditions / _condition_values)."""
    if site.at_least("4.5"):
        return {"enrolment:status": STATUS_ACTIVE, "user:suspended": None, "user:confirmed": None}
    return {"user:suspended": None, "user:confirmed": None}


def condition_data(conditions: Dict[str, Any]) -> str:
    """json_encode() of the condition values as the conditions form stores them: [] when none is set."""
    values: Dict[str, int] = {}
    for identifier, value in conditions.items():
        if value is None:
            continue
        if identifier == "enrolment:status":
            values.update({f"{identifier}_operator": SELECT_EQUAL_TO, f"{identifier}_value": int(value)})
        else:
            values[f"{identifier}_operator"] = BOOLEAN_CHECKED if value else BOOLEAN_NOT_CHECKED
    return json.dumps(values, separators=(",", ":")) if values else "[]"


CONDITIONS = ("enrolment:status", "user:suspended", "user:confirmed")


def _condition_holds(identifier: str, value: Any, row: Row, now: int) -> bool:
    if value is None:
        return True  # no value: the filter adds no SQL
    if identifier == "enrolment:status":
        return enrolment_status(row, now) == value
    if row.user is None:
        return False  # NULL = 1 is not true
    flag = row.user.suspended if identifier == "user:suspended" else row.user.confirmed
    return bool(flag) == bool(value)


# The report the README asks admins to build: the connector's one report
RECOMMENDED: Dict[str, Any] = {
    "name": "CommCare participants",
    "columns": ["course:coursefullnamewithlink", "user:fullnamewithlink", "completion:progresspercent",
                "completion:completed", "access:timeaccess"],
    "sort": [("course:coursefullnamewithlink", SORT_ASC), ("user:fullnamewithlink", SORT_ASC)],
    "uniquerows": True,
}


class Reports:
    """The site's custom reports, by id (reportbuilder_report)."""

    def __init__(self) -> None:
        self.reports: Dict[int, CustomReport] = {}

    def add(self, site: SiteConfig, now: int, name: str, columns: Sequence[Any], sort: Iterable[Any] = (),
            uniquerows: bool = False, audience: Iterable[int] = (), conditions: Optional[Dict[str, Any]] = None,
            headings: Optional[Dict[str, str]] = None) -> CustomReport:
        """A report as an admin builds it: `columns` unique identifiers (or (identifier, custom heading) pairs),
        `headings` more custom headings by identifier, `sort` identifiers or (identifier, SORT_ASC/SORT_DESC or
        'asc'/'desc'), `conditions` None for the version's default setup, else {identifier: value or None}."""
        cols: List[ReportColumn] = []
        for item in columns:
            identifier, heading = (item, "") if isinstance(item, str) else (item[0], item[1])
            if identifier not in COLUMNS:
                raise ValueError(f"the participants source has no column {identifier!r} here; one of {sorted(COLUMNS)}")
            cols.append(ReportColumn(identifier, (headings or {}).get(identifier, heading)))
        order: List[Tuple[str, int]] = []
        for item in sort:
            identifier, direction = (item, SORT_ASC) if isinstance(item, str) else (item[0], item[1])
            direction = {"asc": SORT_ASC, "desc": SORT_DESC}.get(str(direction).lower(), direction)
            if identifier not in {c.uniqueidentifier for c in cols} or COLUMNS[identifier].sort is None:
                raise ValueError(f"cannot sort by {identifier!r}: not a sortable column of the report")
            if direction not in (SORT_ASC, SORT_DESC):
                raise ValueError(f"sort direction {direction!r}: use 'asc' or 'desc'")
            order.append((identifier, int(direction)))
        chosen = default_conditions(site) if conditions is None else dict(conditions)
        unknown = set(chosen) - set(CONDITIONS)
        if unknown:
            raise ValueError(f"conditions modelled: {', '.join(CONDITIONS)}; not {', '.join(sorted(unknown))}")
        report = CustomReport(id=max(self.reports, default=0) + 1, name=name, columns=cols, sort=order,
                              uniquerows=uniquerows, audience=frozenset(int(u) for u in audience), conditions=chosen,
                              timecreated=now, timemodified=now, conditiondata=condition_data(chosen))
        self.reports[report.id] = report
        return report

    def get(self, report_id: int) -> Optional[CustomReport]:
        return self.reports.get(report_id)


# ---------------------------------------------------------------------------------------------- permissions
def has_capability(caller: TokenUser, capability: str) -> bool:
    """At system level, with lib/db/access.php's archetypes for the reportbuilder capabilities (access.py does not
    hold them): 'view' for every authenticated user, 'edit' for managers; a prohibit override removes them."""
    if caller.site_admin:
        return True
    if capability in caller.prohibited:
        return False
    if caller.can(capability):
        return True
    return capability == "moodle/reportbuilder:view" or (
        capability == "moodle/reportbuilder:edit" and caller.profile == "manager")


def can_view(report: CustomReport, caller: TokenUser, site: SiteConfig) -> bool:
    """permission::can_view_report()."""
    def can(cap: str) -> bool:
        return has_capability(caller, f"moodle/reportbuilder:{cap}")

    if not site.enablecustomreports or not any(can(c) for c in ("edit", "editall", "view", "viewall")):
        return False
    if can("viewall"):
        return True
    if report.usercreated == caller.user_id and (can("edit") or can("editall")):
        return True
    if report.usercreated != caller.user_id and can("editall"):
        return True
    return caller.user_id in report.audience


# ---------------------------------------------------------------------------------------------- the answer
def _sort_key(sort: Callable[[Row, Context], Tuple[Any, ...]], ctx: Context) -> Callable[[Row], Tuple[Any, ...]]:
    """(is null, value) per sort field: NULLs after values ascending and, once reversed, before them descending."""
    return lambda row: tuple((v is None, v if v is not None else 0) for v in sort(row, ctx))


def _sort_rows(rows: List[Row], report: CustomReport, ctx: Context) -> List[Row]:
    """ORDER BY each sort column's sort fields; NULLs last ascending, first descending (PostgreSQL). Stable: ties keep
    the source's order, where SQL would give none."""
    out = list(rows)
    for identifier, direction in reversed(report.sort):
        sort = COLUMNS[identifier].sort
        if sort is not None:
            out.sort(key=_sort_key(sort, ctx), reverse=direction == SORT_DESC)
    return out


def table_rows(report: CustomReport, ctx: Context) -> List[Row]:
    """The rows the report's SQL returns, unpaged: conditions, GROUP BY for unique rows, ORDER BY."""
    if not report.columns:
        return []  # init_sql(..., '1=0'): no columns, no rows
    now = ctx.school.clock
    rows = [r for r in source_rows(ctx.school)
            if all(_condition_holds(k, v, r, now) for k, v in report.conditions.items())]
    if report.uniquerows:
        seen: Dict[Tuple[Any, ...], Row] = {}
        for r in rows:
            seen.setdefault(tuple(v for c in report.columns for v in COLUMNS[c.uniqueidentifier].fields(r, ctx)), r)
        rows = list(seen.values())
    return _sort_rows(rows, report, ctx)


def headers(report: CustomReport, ctx: Context) -> List[str]:
    return [format_string(c.heading, ctx.site, ctx.lang) if c.heading != ""
            else get_string(COLUMNS[c.uniqueidentifier].title, ctx.lang) for c in report.columns]


def report_data(report: CustomReport, ctx: Context, page: int, perpage: int) -> Dict[str, Any]:
    """custom_report_data_exporter: headers, the page's rows, totalrowcount."""
    rows = table_rows(report, ctx)
    start, limit = max(0, page * perpage), max(0, perpage)  # normalise_limit_from_num(); limit 0: no limit
    chosen = rows[start:start + limit] if limit else rows[start:]
    return {"headers": headers(report, ctx) if report.columns else [],
            "rows": [{"columns": [COLUMNS[c.uniqueidentifier].format(r, ctx) for c in report.columns]} for r in chosen],
            "totalrowcount": len(rows)}


def report_details(report: CustomReport, ctx: Context, name: str) -> Dict[str, Any]:
    """custom_report_details_exporter (`name` already through external_format_string)."""
    user = ctx.school.users[report.usermodified]
    identity = ", ".join(str(getattr(user, f)) for f in ctx.site.showuseridentity if getattr(user, f, ""))
    www = ctx.wwwroot
    modifiedby = {"id": user.id, "email": user.email, "idnumber": user.idnumber, "phone1": user.phone1,
                  "phone2": user.phone2, "department": format_string(user.department, ctx.site, ctx.lang),
                  "institution": format_string(user.institution, ctx.site, ctx.lang), "fullname": user.fullname,
                  "identity": identity, "profileurl": f"{www}/user/profile.php?id={user.id}",
                  "profileimageurl": f"{www}/theme/image.php/boost/core/1/u/f1",
                  "profileimageurlsmall": f"{www}/theme/image.php/boost/core/1/u/f2"}
    return {"name": name, "source": report.source, "type": TYPE_CUSTOM_REPORT, "uniquerows": report.uniquerows,
            "conditiondata": report.conditiondata, "settingsdata": None, "contextid": SYSTEM_CONTEXT_ID,
            "component": "", "area": "", "itemid": 0, "usercreated": report.usercreated, "id": report.id,
            "timecreated": report.timecreated, "timemodified": report.timemodified,
            "usermodified": report.usermodified, "sourcename": get_string("courseparticipants", ctx.lang),
            "modifiedby": modifiedby}


__all__ = ["COLUMNS", "CONDITIONS", "Context", "CustomReport", "PARTICIPANTS", "RECOMMENDED", "Reports", "SORT_ASC",
           "SORT_DESC", "can_view", "default_conditions", "format_float", "get_string", "percent", "report_data",
           "report_details", "user_timezone", "userdate"]
