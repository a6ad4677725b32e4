"""The Moodle web-service functions the source calls: each one's name, the parameters it is called with, what it
answers, and what the token's role must hold for it. The only module that knows them; the client (client.py) knows
Moodle's REST protocol, not its functions.

Every function below takes the client (anything with `call`) and returns Moodle's decoded answer.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

from .errors import MoodleFunctionNotAvailableError, MoodleInvalidResponseError
from .params import options_list

FN_SITE_INFO = "core_webservice_get_site_info"
FN_CATEGORIES = "core_course_get_categories"
FN_COURSES = "core_course_get_courses_by_field"  # scoped: skips what the token cannot open instead of failing
FN_ENROLLED_USERS = "core_enrol_get_enrolled_users"
FN_USERS_BY_FIELD = "core_user_get_users_by_field"
FN_GRADE_ITEMS = "gradereport_user_get_grade_items"
FN_USERS_COURSES = "core_enrol_get_users_courses"
FN_ACTIVITIES_COMPLETION = "core_completion_get_activities_completion_status"
FN_COURSE_CONTENTS = "core_course_get_contents"
FN_ASSIGNMENTS = "mod_assign_get_assignments"
FN_SUBMISSIONS = "mod_assign_get_submissions"
FN_USER_FLAGS = "mod_assign_get_user_flags"  # per-student extensions
FN_PARTICIPANT = "mod_assign_get_participant"  # per-student overrides; only with due_date_overrides
FN_RETRIEVE_REPORT = "core_reportbuilder_retrieve_report"  # only with participants_report_id (report.py)

# Which resource needs which functions, so a token that lacks one fails early and says which.
RESOURCE_FUNCTIONS = {
    "site_info": [FN_SITE_INFO],
    "course_categories": [FN_CATEGORIES],
    "courses": [FN_COURSES, FN_CATEGORIES],
    # the last two prove the lists whole: enrolment counts, and the grade report of a course that looks empty
    "enrolments": [FN_COURSES, FN_ENROLLED_USERS, FN_USERS_COURSES, FN_GRADE_ITEMS],
    "users": [FN_COURSES, FN_ENROLLED_USERS, FN_USERS_BY_FIELD],
    "grades": [FN_COURSES, FN_ENROLLED_USERS, FN_GRADE_ITEMS],
    "course_engagement": [FN_COURSES, FN_ENROLLED_USERS, FN_USERS_COURSES],
    "activity_completion": [FN_COURSES, FN_ENROLLED_USERS, FN_ACTIVITIES_COMPLETION],
    "course_sections": [FN_COURSES, FN_ENROLLED_USERS, FN_COURSE_CONTENTS],
    "course_modules": [FN_COURSES, FN_ENROLLED_USERS, FN_COURSE_CONTENTS],
    "assignments": [FN_COURSES, FN_ASSIGNMENTS],
    "assignment_submissions": [FN_COURSES, FN_ASSIGNMENTS, FN_SUBMISSIONS],
    "assignment_user_flags": [FN_COURSES, FN_ENROLLED_USERS, FN_ASSIGNMENTS, FN_USER_FLAGS],
    "assignment_due_dates": [FN_COURSES, FN_ENROLLED_USERS, FN_ASSIGNMENTS, FN_PARTICIPANT],
}

# What each function needs of the token user's role when Moodle refuses it (nopermissions, notingroup,
# accessdenied, errorcoursecontextnotvalid): the README's role lists them all. Moodle's message names the
# capability only in translation, so the connector says which one by function (and option, see `enrolled_users_needs`).
CAPABILITIES = {
    FN_CATEGORIES: "moodle/category:viewhiddencategories",
    FN_COURSES: "moodle/course:view",
    FN_ENROLLED_USERS: "moodle/course:viewparticipants (and moodle/course:view to open the course)",
    FN_USERS_BY_FIELD: "moodle/user:viewdetails",
    FN_GRADE_ITEMS: "moodle/grade:viewall and gradereport/user:view (and moodle/site:accessallgroups in courses with groups)",
    FN_USERS_COURSES: "moodle/course:viewparticipants and moodle/user:viewdetails",
    FN_ACTIVITIES_COMPLETION: "report/progress:view (and moodle/site:accessallgroups in courses with separate groups)",
    FN_COURSE_CONTENTS: "moodle/course:view",
    FN_ASSIGNMENTS: "moodle/course:view and mod/assign:view",
    FN_SUBMISSIONS: "mod/assign:grade",
    FN_USER_FLAGS: "mod/assign:grade",
    FN_PARTICIPANT: "mod/assign:grade",
    FN_RETRIEVE_REPORT: "moodle/reportbuilder:view, and a place in the report's audience",
}
CAP_ENROLREVIEW = "moodle/course:enrolreview"  # core_enrol_get_enrolled_users with onlyactive needs it
CAP_ALLGROUPS = "moodle/site:accessallgroups"
CAP_CREATETOKEN = "moodle/webservice:createtoken"  # login/token.php, for a username + password instead of a token
# The connector's role, granted at system level (the README's "The Moodle role" explains each): everything the
# functions above check, plus what makes Moodle show data it otherwise leaves out without a word. Read-only: no
# moodle/course:update, no moodle/user:update, and no moodle/grade:viewhidden (hidden grades stay off phones).
ROLE_CAPABILITIES = (
    "webservice/rest:use", "moodle/course:view", "moodle/course:viewhiddencourses",
    "moodle/category:viewhiddencategories", "moodle/course:viewparticipants", CAP_ENROLREVIEW, CAP_ALLGROUPS,
    "moodle/course:viewhiddenuserfields", "moodle/user:viewdetails", "moodle/user:viewhiddendetails",
    "moodle/user:viewalldetails", "moodle/site:viewuseridentity", "moodle/site:viewfullnames",
    "moodle/course:viewsuspendedusers", "moodle/grade:viewall", "gradereport/user:view", "report/progress:view",
    "report/completion:view", "mod/assign:view", "mod/assign:grade", "mod/quiz:view",
)

# What each function answers at the top level, and the keys that hold its lists. A real Moodle checks every
# answer against the function's description before sending it (lib/external/classes/external_api.php
# clean_returnvalue: "Only arrays accepted" -> invalid_response_exception), so a null or a wrong type here
# came from something in between (a proxy, a patched or plugin-overridden function): never data to load.
RETURNS: Dict[str, Tuple[type, Tuple[str, ...]]] = {
    FN_SITE_INFO: (dict, ("functions",)),
    FN_CATEGORIES: (list, ()),
    FN_COURSES: (dict, ("courses",)),
    FN_ENROLLED_USERS: (list, ()),
    FN_USERS_BY_FIELD: (list, ()),
    FN_GRADE_ITEMS: (dict, ("usergrades",)),
    FN_USERS_COURSES: (list, ()),
    FN_ACTIVITIES_COMPLETION: (dict, ("statuses",)),
    FN_COURSE_CONTENTS: (list, ()),
    FN_ASSIGNMENTS: (dict, ("courses",)),
    FN_SUBMISSIONS: (dict, ("assignments",)),
    FN_USER_FLAGS: (dict, ("assignments",)),
    FN_PARTICIPANT: (dict, ()),
    FN_RETRIEVE_REPORT: (dict, ()),
}

SITE_COURSE_ID = 1  # core_course_get_courses_by_field always returns the front page as course 1
# Only the fields the enrolment table uses: keeps enrolled-user pages small on big courses.
ENROLMENT_USERFIELDS = "id,fullname,roles,groups,lastaccess,lastcourseaccess"
ACTIVE_USERFIELDS = "id"
COURSES_PER_ASSIGNMENTS_CALL = 50  # course ids per mod_assign_get_assignments call
ASSIGNMENTS_PER_CALL = 50  # assignment ids per mod_assign_get_submissions / mod_assign_get_user_flags call


class Caller(Protocol):
    """What these functions need of the client: MoodleClient.call."""

    def call(self, function: str, params: Optional[Mapping[str, Any]] = None, *, needs: Optional[str] = None) -> Any:
        ...


def check_answer(function: str, data: Any) -> None:
    """Refuse an answer that is not what the function returns (RETURNS): a null read as an empty page would end an
    enrolment list early, and every student after it would read as unenrolled."""
    if function not in RETURNS:
        return
    kind, list_keys = RETURNS[function]
    problem = None
    if not isinstance(data, kind):
        problem = f"{_json_kind(data)} where it returns {_json_kind(kind())}"
    elif isinstance(data, dict):
        bad = [k for k in list_keys if k in data and not isinstance(data[k], list)]
        if bad:
            problem = f"{_json_kind(data[bad[0]])} for {bad[0]!r}, which is always a list"
    if problem:
        raise MoodleInvalidResponseError(
            f"Moodle answered {function} with {problem}. Moodle itself never sends that (it checks every answer "
            "against the function's description), so a proxy, a plugin or a patched function changed it. Nothing "
            "was loaded: check what sits between the connector and Moodle, and the server's error log.")


def require_functions(site_info: Mapping[str, Any], resource: str, also: Sequence[str] = ()) -> None:
    """Fail before extracting when the token's service lacks a function `resource` calls (and `also`: the ones a
    setting adds)."""
    available = {f.get("name") for f in site_info.get("functions") or []}
    missing = [fn for fn in [*RESOURCE_FUNCTIONS[resource], *also] if fn not in available]
    if missing:
        raise MoodleFunctionNotAvailableError(
            f"The Moodle web service behind this token lacks {', '.join(missing)}, needed for the '{resource}' "
            "table. Add it to the service (Site administration > Server > Web services > External services > "
            "Functions).", function=missing[0], errorcode="functionmissing")


# ---------------------------------------------------------------------------------------------- the functions
def site_info(client: Caller) -> dict:
    """The site, the token's user and the functions its service offers."""
    return client.call(FN_SITE_INFO)


def categories(client: Caller) -> List[dict]:
    """Every category the token's user can see, sub-categories included."""
    return list(client.call(FN_CATEGORIES, {"addsubcategories": 1}) or [])


def courses_by_field(client: Caller, field: str = "", value: Any = "") -> dict:
    """Courses by `ids` (comma-separated), by `category`, or (no field) every course the user can open."""
    return client.call(FN_COURSES, {"field": field, "value": value})


def enrolled_users_params(course_id: int, offset: int, size: int, *, active_only: bool) -> Dict[str, Any]:
    """One page of a course's enrolled users (all, or only those with an active enrolment), with the fields the
    enrolment table uses (only ids for the active list)."""
    return {"courseid": course_id,
            "options": options_list(onlyactive=1 if active_only else None,
                                    userfields=ACTIVE_USERFIELDS if active_only else ENROLMENT_USERFIELDS,
                                    limitfrom=offset, limitnumber=size)}


def enrolled_users_needs(active_only: bool) -> Optional[str]:
    """What a refusal of the active list names: onlyactive needs moodle/course:enrolreview."""
    return CAP_ENROLREVIEW if active_only else None


def users_by_id(client: Caller, user_ids: Sequence[int]) -> List[dict]:
    """Full profiles of these users (those the caller may not see are skipped without a word)."""
    return client.call(FN_USERS_BY_FIELD, {"field": "id", "values": list(user_ids)}) or []


def grade_report(client: Caller, course_id: int) -> dict:
    """Every graded user's grade items in a course, in one call (userid=0)."""
    return client.call(FN_GRADE_ITEMS, {"courseid": course_id, "userid": 0})


def users_courses_params(user_id: int, *, with_counts: bool) -> Dict[str, Any]:
    return {"userid": user_id, "returnusercount": 1 if with_counts else 0}


def users_courses(client: Caller, user_id: int, *, with_counts: bool) -> List[dict]:
    """A user's courses with progress, completion and last access; with each course's enrolment count if asked."""
    return client.call(FN_USERS_COURSES, users_courses_params(user_id, with_counts=with_counts)) or []


def activities_completion_params(course_id: int, user_id: int) -> Dict[str, Any]:
    return {"courseid": course_id, "userid": user_id}


def activities_completion(client: Caller, course_id: int, user_id: int) -> dict:
    """A student's completion state of every activity of a course."""
    return client.call(FN_ACTIVITIES_COMPLETION, activities_completion_params(course_id, user_id))


def course_contents_params(course_id: int) -> Dict[str, Any]:
    """A course's sections and activities, without their files and pages."""
    return {"courseid": course_id, "options": [{"name": "excludecontents", "value": 1}]}


def course_contents(client: Caller, course_id: int) -> List[dict]:
    return client.call(FN_COURSE_CONTENTS, course_contents_params(course_id)) or []


def assignments(client: Caller, course_ids: Sequence[int]) -> dict:
    """The assignments of these courses. includenotenrolledcourses=1: without it Moodle answers only courses the
    token's user is enrolled in, and an integration user is enrolled in none (mod/assign/externallib.php)."""
    return client.call(FN_ASSIGNMENTS, {"courseids": list(course_ids), "includenotenrolledcourses": 1})


def submissions(client: Caller, assignment_ids: Sequence[int], since: int) -> dict:
    """Submissions of these assignments modified at or after `since` (Unix seconds, inclusive)."""
    return client.call(FN_SUBMISSIONS, {"assignmentids": list(assignment_ids), "since": since})


def user_flags(client: Caller, assignment_ids: Sequence[int]) -> dict:
    """Per-student flags of these assignments: extensions and locks."""
    return client.call(FN_USER_FLAGS, {"assignmentids": list(assignment_ids)})


def participant(client: Caller, assignment_id: int, user_id: int) -> dict:
    """One student's own dates of an assignment, user and group overrides applied."""
    return client.call(FN_PARTICIPANT, {"assignid": assignment_id, "userid": user_id})


def _json_kind(value: Any) -> str:
    return {type(None): "null", dict: "an object", list: "a list", str: "a string", bool: "true/false"}.get(
        type(value), "a number")
