"""Constants of the Moodle web-service contract the source relies on."""

REST_PATH = "webservice/rest/server.php"
TOKEN_PATH = "login/token.php"

# Every function the source may call; checked against core_webservice_get_site_info before extracting.
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
# capability only in translation, so the connector says which one by function (and option, see snapshot.py).
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
}
CAP_ENROLREVIEW = "moodle/course:enrolreview"  # core_enrol_get_enrolled_users with onlyactive needs it
CAP_ALLGROUPS = "moodle/site:accessallgroups"

# Gaps a run may be told to accept (SOURCES__MOODLE__ALLOW_HIDDEN): data Moodle hides that the run then leaves out.
GAP_PHONES = "phones"
GAP_LAST_ACCESS = "last_access"
ACCEPTABLE_GAPS = (GAP_PHONES, GAP_LAST_ACCESS)
# Fields the cases can do without: loaded empty when hidden, with a warning (the README lists them).
GAP_NAMES, GAP_EMAILS, GAP_USERNAMES, GAP_PROGRESS = "names_hidden", "emails_hidden", "usernames_hidden", "progress_hidden"
ENROLMENT_GAPS = (GAP_LAST_ACCESS, "enrolments_unverified")
PROFILE_GAPS = (GAP_PHONES, GAP_NAMES, GAP_EMAILS, GAP_USERNAMES, "inactive_profiles_hidden")

SITE_COURSE_ID = 1  # core_course_get_courses always returns the front page as course 1

# Only the fields the enrolment table uses: keeps enrolled-user pages small on big courses.
ENROLMENT_USERFIELDS = "id,fullname,roles,groups,lastaccess,lastcourseaccess"
ACTIVE_USERFIELDS = "id"

# Per-call settings sent with every request (webservice/lib.php set_web_service_call_settings). Names come back as
# stored: without raw, format_string escapes & and strips tags, which turns a multi-language name into both
# languages run together (filters reach names only when the site sets filterall). Staging models resolve them.
CALL_SETTINGS = (("moodlewssettingraw", "1"),)

DEFAULT_PAGE_SIZE = 500  # users per core_enrol_get_enrolled_users page
DEFAULT_USER_BATCH_SIZE = 200  # ids per core_user_get_users_by_field POST, far below max_input_vars=1000
DEFAULT_COURSE_BATCH_SIZE = 50  # course ids per mod_assign_get_assignments call
DEFAULT_ASSIGNMENT_BATCH_SIZE = 50  # assignment ids per mod_assign_get_submissions call
DEFAULT_CONCURRENCY = 4  # Moodle has no rate limiter; 2-4 parallel requests is polite
DEFAULT_TIMEOUT_SECONDS = 60.0
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_BACKOFF_FACTOR = 1.0
DEFAULT_MAX_RETRY_DELAY = 60.0  # caps Retry-After too: a 300 s maintenance hint is better met by the next run
DEFAULT_STUDENT_ROLES = ("student",)

# Moodle errorcodes that only a retry can fix.
RETRYABLE_ERRORCODES = frozenset({"ex_unabletolock"})

# A time Moodle reports further ahead of this machine's clock than this is a typo or a broken clock (a
# lastaccess in 2100): it never moves a watermark or cursor, or every later change would stay unseen.
CLOCK_SKEW_SECONDS = 600

# What each function answers at the top level, and the keys that hold its lists. A real Moodle checks every
# answer against the function's description before sending it (lib/external/classes/external_api.php
# clean_returnvalue: "Only arrays accepted" -> invalid_response_exception), so a null or a wrong type here
# came from something in between (a proxy, a patched or plugin-overridden function): never data to load.
RETURNS = {
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
}
