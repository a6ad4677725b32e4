"""What a webhook event makes the next micro-batch re-read, and the extract's refresh of what no access reveals."""

from __future__ import annotations

from emulators.moodle import MoodleEmulator
from moodle_commcare.webhook_events import is_relevant, targets_of

from .conftest import Warehouse


def graded(course: object, user: object) -> dict:
    # lib/classes/event/user_graded.php: relateduserid is the graded user; ids may arrive as strings
    return {"eventname": "\\core\\event\\user_graded", "courseid": course, "relateduserid": user, "objectid": "77",
            "contextlevel": 50, "contextinstanceid": course}


def test_events_name_courses_and_students() -> None:
    lookup = {9: {2, 3}}
    found = targets_of([graded("2", "41"), graded(3, 42), graded(5, 43),  # course 5: not synced
                        {"eventname": "\\core\\event\\user_updated", "objectid": 9, "relateduserid": 9},
                        {"eventname": "\\core\\event\\role_assigned", "contextlevel": "50", "contextinstanceid": "3",
                         "relateduserid": "44", "courseid": 0},
                        {"eventname": "\\core\\event\\course_updated", "objectid": 1, "courseid": 1}],  # front page
                       known_courses={2, 3, 4}, courses_of_user=lambda u: lookup.get(u, set()))
    assert found.courses == {2, 3}
    assert found.refresh_courses == {2, 3}, "graded courses re-read their grade reports; a role change does not"
    assert found.refresh_users == {41, 42, 44}
    assert found.events == 6 and found.outside == 2


def test_only_the_events_the_cases_use_are_kept() -> None:
    assert is_relevant(graded(2, 41)) is None
    assert is_relevant({"eventname": "\\assignsubmission_file\\event\\submission_updated", "courseid": 2}) is None
    assert is_relevant({"eventname": "\\core\\event\\user_loggedin", "userid": 4}) == "event the cases do not use"
    assert is_relevant({"courseid": 2}) == "no eventname"


def test_a_refresh_rereads_what_no_access_revealed(warehouse: Warehouse) -> None:
    """A grade written through the web services (or recalculated by cron) moves nobody's access time (lib/moodlelib.php
    require_login updates it for pages only): the watermarks see no change, the
    event's refresh does, and costs a few requests, not a full extract."""
    moodle: MoodleEmulator = warehouse.moodle
    warehouse.extract()
    school = moodle.school
    course = next(c for c in sorted(school.enrolments) if any(i.itemtype == "mod" for i in school.grade_items[c])
                  and school.students_of(c, True))
    student = school.students_of(course, True)[0]
    item = next(i for i in school.grade_items[course] if i.itemtype == "mod")
    school.set_grade(course, student, item.id, item.grademin + 0.25, via="webservice")  # moves no access time

    def loaded() -> float:
        return warehouse.rows("select graderaw from grades where course_id = ? and user_id = ? and grade_item_id = ?",
                              course, student, item.id)[0][0]

    warehouse.extract(course_ids=[course])
    assert loaded() != item.grademin + 0.25, "the watermark alone does not see it"
    moodle.reset_counts()
    warehouse.extract(course_ids=[course], refresh_course_ids=[course], refresh_user_ids=[student])
    assert loaded() == item.grademin + 0.25
    requests = sum(moodle.requests.values())
    assert requests <= 40, f"a targeted refresh, not a full extract ({requests} requests)"
