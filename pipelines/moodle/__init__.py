"""dlt source for a Moodle site's web services: courses, enrolments, profiles, grades and engagement.

Laid out as dlt's verified sources are:

- `config.py`: the settings (a configspec, the credentials a union: token, or username + password + service),
  checked in one place;
- `client.py`: Moodle's REST protocol (retries, typed errors, secrets kept out of messages, request counts);
- `webservice.py`: the web-service functions the source calls, their parameters, answers and capabilities;
- `resources.py`: one resource per table, each taking the client and the run's shared reads (`run.py`);
- `selection.py`: which courses a run reads, and what changed since the last run (watermarks, cursors);
- `enrolments.py`: enrolment lists read so nobody is lost; `gaps.py`: what Moodle hid from the token's user;
- `schema.py`: every table and column; `readable.py`: E.164 phones and plain-text names added as rows pass;
- `preflight.py`: `moodle-commcare check`'s Moodle half, reading a sample through the modules above.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import dlt
from dlt.sources import DltResource

from . import readable, resources
from .client import MoodleClient, RequestStats
from .config import (
    DEFAULT_CALL_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_PAGE_SIZE,
    DEFAULT_REPORT_PAGE_SIZE,
    DEFAULT_STUDENT_ROLES,
    DEFAULT_USER_BATCH_SIZE,
    MoodleCredentials,
    MoodleLoginCredentials,
    MoodleSettings,
    MoodleTokenCredentials,
)
from .run import MoodleRun

__all__ = ["moodle_source", "MoodleSettings", "MoodleCredentials", "MoodleTokenCredentials", "MoodleLoginCredentials",
           "RequestStats"]


@dlt.source(name="moodle", section=resources.SECTION, max_table_nesting=0, spec=MoodleSettings)
def moodle_source(
    base_url: str = dlt.config.value,
    credentials: MoodleCredentials = dlt.secrets.value,
    course_ids: Sequence[int] = (),
    category_ids: Sequence[int] = (),
    student_roles: Sequence[str] = DEFAULT_STUDENT_ROLES,
    allow_hidden: Sequence[str] = (),
    due_date_overrides: bool = False,
    max_concurrency: int = DEFAULT_CONCURRENCY,
    page_size: int = DEFAULT_PAGE_SIZE,
    user_batch_size: int = DEFAULT_USER_BATCH_SIZE,
    call_batch_size: int = DEFAULT_CALL_BATCH_SIZE,
    participants_report_id: Optional[int] = None,
    report_page_size: int = DEFAULT_REPORT_PAGE_SIZE,
    full_refresh: bool = False,
    refresh_course_ids: Sequence[int] = (),
    refresh_user_ids: Sequence[int] = (),
    language: Optional[str] = None,
    default_phone_region: Optional[str] = None,
    request_timeout: float = MoodleSettings.request_timeout,
    max_attempts: int = MoodleSettings.max_attempts,
    backoff_factor: float = MoodleSettings.backoff_factor,
    max_retry_delay: float = MoodleSettings.max_retry_delay,
    allow_insecure_http: bool = False,
    http_auth: Optional[Tuple[str, str]] = None,
    settings: MoodleSettings = None,  # type: ignore[assignment]  # dlt passes every setting here, resolved
    request_stats: Optional[RequestStats] = None,
    known_enrolments: Optional[Dict[int, Dict[int, bool]]] = None,
) -> Sequence[DltResource]:
    """Load a Moodle site.

    Every setting is read by dlt from [sources.moodle] in .dlt/config.toml, [sources.moodle.credentials] in
    .dlt/secrets.toml, or SOURCES__MOODLE__* variables, unless given here; MoodleSettings declares them (types,
    defaults) and checks them, and dlt hands the checked whole to `settings`. The ones most often set:

    Args:
        base_url: the site root, e.g. https://moodle.school.org.
        credentials: MoodleTokenCredentials (a web-service token) or MoodleLoginCredentials (username + password +
            service, exchanged at login/token.php); run_extract builds one from its token= or username= password=
            service= arguments (config.source_arguments).
        course_ids / category_ids: limit the run to these courses, or to courses in these categories
            (sub-categories included).
        allow_hidden: data the site hides from the token's user that the run may go without
            ("phones", "last_access"); anything else hidden stops the run.
        call_batch_size: per-student calls sent in one request when the token's service includes
            tool_mobile_call_external_functions (1: one call per request).
        participants_report_id: a "Course participants" custom report to page progress, completion and last
            access from, instead of one call per changed student (report.py).
        full_refresh: ignore the watermarks and cursors and re-fetch everything.
        refresh_course_ids / refresh_user_ids: re-read these courses' grades and outline, these students' engagement
            and completion, though no access time moved (what a webhook event said changed: serve-webhooks).
        http_auth: (user, password) of HTTP basic auth in front of Moodle; run_extract takes it out of a
            base_url written https://user:password@host, so the address dlt traces carries no password.
        request_stats: a RequestStats to count requests into (the CLI prints it).
        known_enrolments: {course id: {user id: is_active}} as the warehouse's last run loaded them (run_extract
            reads them): a member missing, or no longer active, in a course's read is read once more to confirm it.
    """
    client = MoodleClient(settings, stats=request_stats)
    run = MoodleRun(client, settings, known_enrolments=known_enrolments)
    users = resources.users(client, run)
    users.add_map(readable.sms_phones(settings.default_phone_region))
    names = readable.PlainNames(lambda: settings.language or run.site_info().get("lang"))
    # grades go to dlt as Arrow tables (arrow.py), which a map cannot reach: the resource adds their plain names
    grades = resources.grades(client, run, names)
    named = [resources.course_categories(client, run), resources.courses(client, run),
             resources.course_contents(client, run), resources.assignments(client, run)]
    for resource in named:
        resource.add_map(names.add)
    course_categories, courses, course_contents, assignments = named
    return (resources.site_info(client, run), course_categories, courses, resources.enrolments(client, run), users,
            grades, resources.course_engagement(client, run), resources.activity_completion(client, run),
            course_contents, assignments, resources.assignment_submissions(client, run),
            resources.assignment_user_flags(client, run), resources.assignment_due_dates(client, run))

