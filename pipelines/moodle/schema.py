"""Every raw table with every column and its type, declared up front.

Moodle leaves optional fields out of its answers, and a new site may have no assignments, no completion and no
submissions at all. Declared here, each table is created with all its columns on the first run whatever Moodle
answered, so the dbt models always build.
"""

from __future__ import annotations

from typing import Any, Dict

from . import readable

T = "text"
I = "bigint"  # noqa: E741 - one letter a type keeps the column table readable
B = "bool"
D = "double"
J = "json"

TABLES: Dict[str, Dict[str, str]] = {
    "site_info": dict(siteurl=T, sitename=T, release=T, version=T, lang=T, token_userid=I, token_username=T,
                      userissiteadmin=B, functions=J),
    "course_categories": dict(id=I, name=T, idnumber=T, description=T, parent=I, path=T, depth=I, coursecount=I,
                              visible=I, timemodified=I),
    "courses": dict(id=I, shortname=T, fullname=T, displayname=T, idnumber=T, categoryid=I, categoryname=T, summary=T,
                    format=T, startdate=I, enddate=I, visible=I, groupmode=I, timecreated=I, timemodified=I,
                    enablecompletion=I, showgrades=I, lang=T),
    # lastaccess / lastcourseaccess NULL: Moodle hid them (unknown); 0: never
    "enrolments": dict(course_id=I, user_id=I, roles=T, role_ids=T, is_student=B, is_active=B, lastaccess=I,
                       lastcourseaccess=I, group_ids=T),
    "enrolment_snapshots": dict(course_id=I, enrolled_count=I),
    "users": dict(id=I, username=T, firstname=T, lastname=T, fullname=T, email=T, phone1=T, phone2=T, address=T,
                  city=T, country=T, idnumber=T, institution=T, department=T, firstaccess=I, lastaccess=I, auth=T,
                  suspended=B, confirmed=B, lang=T, timezone=T, customfields=J),
    "grades": dict(course_id=I, user_id=I, grade_item_id=I, itemname=T, itemtype=T, itemmodule=T, iteminstance=I,
                   cmid=I, categoryid=I, graderaw=D, gradeformatted=T, grademin=D, grademax=D, percentageformatted=T,
                   lettergradeformatted=T, gradedategraded=I, gradedatesubmitted=I, gradeishidden=B, feedback=T),
    "course_engagement": dict(user_id=I, course_id=I, progress=D, completed=B, lastaccess=I, completionusertracked=B),
    "activity_completion": dict(user_id=I, course_id=I, cmid=I, modname=T, instance=I, state=I, timecompleted=I,
                                tracking=I, overrideby=I, hascompletion=B, isautomatic=B, uservisible=B),
    # uservisible / availabilityinfo: for the token's user (a restricted section is listed with the reason)
    "course_sections": dict(id=I, course_id=I, section=I, name=T, visible=I, summary=T, module_count=I,
                            uservisible=B, availabilityinfo=T),
    # visibleoncoursepage 0: stealth; availability: the restriction JSON as Moodle sends it (NULL when none, or when
    # the token's user may not see it); due_at: the `dates` entry duedate / timeclose
    "course_modules": dict(id=I, course_id=I, section_id=I, position=I, instance=I, modname=T, name=T, url=T,
                           visible=I, uservisible=B, visibleoncoursepage=I, availability=T, availabilityinfo=T,
                           completion=I, description=T, due_at=I),
    "assignments": dict(id=I, course_id=I, cmid=I, name=T, duedate=I, cutoffdate=I, allowsubmissionsfromdate=I,
                        gradingduedate=I, timemodified=I, nosubmissions=I, teamsubmission=I,
                        preventsubmissionnotingroup=I),
    # userid 0 with groupid set: a team's submission, shared by every member of the group
    "assignment_submissions": dict(id=I, assignment_id=I, userid=I, groupid=I, attemptnumber=I, status=T,
                                   gradingstatus=T, timecreated=I, timemodified=I),
    "assignment_user_flags": dict(assignment_id=I, user_id=I, extensionduedate=I, locked=I),
    "assignment_due_dates": dict(assignment_id=I, user_id=I, duedate=I, cutoffdate=I, allowsubmissionsfromdate=I),
    # data Moodle hid from the token's user in a run that accepted it (SOURCES__MOODLE__ALLOW_HIDDEN) or could do without
    "access_gaps": dict(code=T, what=T, fix=T, accepted=B),
}

PRIMARY_KEYS: Dict[str, Any] = {
    "site_info": "siteurl", "course_categories": "id", "courses": "id", "enrolments": ("course_id", "user_id"),
    "enrolment_snapshots": "course_id", "users": "id", "grades": ("course_id", "user_id", "grade_item_id"),
    "course_engagement": ("user_id", "course_id"), "activity_completion": ("user_id", "cmid"),
    "course_sections": "id", "course_modules": "id", "assignments": "id", "assignment_submissions": "id",
    "assignment_user_flags": ("assignment_id", "user_id"), "assignment_due_dates": ("assignment_id", "user_id"),
    "access_gaps": "code",
}


def columns(table: str) -> Dict[str, Dict[str, Any]]:
    """dlt column hints; every run also stamps `extracted_at`, and readable.py adds each text column's
    `<column>_plain` and each phone's `<column>_e164`."""
    cols = {name: {"data_type": t, "nullable": True} for name, t in TABLES[table].items()}
    for column in readable.TEXT_COLUMNS.get(table, ()):
        cols[f"{column}_plain"] = {"data_type": T, "nullable": True}
    if table == "users":
        for column in readable.PHONE_COLUMNS:
            cols[f"{column}_e164"] = {"data_type": T, "nullable": True}
    cols["extracted_at"] = {"data_type": "timestamp", "nullable": True}
    return cols
