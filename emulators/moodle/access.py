"""Who the token belongs to and what Moodle lets them do: site admin, Manager, a custom system role, a teacher.

`has_capability` follows Moodle's model closely enough for the functions the connector calls: a site admin
has everything (is_siteadmin), a role assigned at system level applies in every course, a role held in a
course (through an enrolment) applies there only. Archetype capabilities are those of lib/db/access.php,
mod/assign/db/access.php, report/*/db/access.php and grade/report/user/db/access.php.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Optional

# Granted to every logged-in user by the "Authenticated user" role (lib/db/access.php archetype 'user'), including
# the view capability of the resource modules whose db/access.php gives it to archetype 'user' (mod/page, mod/url,
# mod/resource, mod/folder, mod/label: 'guest' and 'user'); quizzes and assignments give theirs to course roles only.
AUTHENTICATED = frozenset({"moodle/category:viewcourselist", "webservice/rest:use", "mod/page:view", "mod/url:view",
                           "mod/resource:view", "mod/folder:view", "mod/label:view"})
# cm_info::is_user_access_restricted_by_capability() (lib/modinfolib.php) checks 'mod/<modname>:view' where the module
# defines it (get_capability_info); mod_forum defines none (its readers need mod/forum:viewdiscussion inside).
VIEW_CAPABILITY = {m: f"mod/{m}:view" for m in ("assign", "quiz", "page", "url", "resource", "folder", "label")}

# Default capabilities per archetype (lib/db/access.php and the plugins' db/access.php), for those the
# connector's functions check. Non-editing teachers lack accessallgroups, enrolreview and course:useremail.
_TEACHING = frozenset({
    "moodle/course:viewhiddenuserfields", "moodle/site:viewuseridentity", "moodle/site:viewfullnames",
    "moodle/user:viewdetails", "moodle/user:viewhiddendetails", "moodle/grade:viewall", "moodle/grade:viewhidden",
    "gradereport/user:view", "report/progress:view", "report/completion:view", "moodle/course:viewparticipants",
    "moodle/course:viewhiddencourses", "mod/assign:view", "mod/assign:grade", "mod/assign:viewgrades", "mod/quiz:view",
    "moodle/role:review", "moodle/course:viewsuspendedusers", "moodle/course:viewhiddenactivities",
    "moodle/course:ignoreavailabilityrestrictions",  # manager, coursecreator, editingteacher, teacher
})
# lib/db/access.php: hidden sections, and editing activities (which shows stealth ones on the course page), are for
# editing teachers and managers only
_EDITING = frozenset({"moodle/course:viewhiddensections", "moodle/course:manageactivities",
                      "moodle/course:activityvisibility"})
ARCHETYPES: Dict[str, FrozenSet[str]] = {
    "teacher": _TEACHING,
    "editingteacher": _TEACHING | _EDITING | {"moodle/site:accessallgroups", "moodle/course:enrolreview",
                                              "moodle/course:useremail", "moodle/course:update"},
    "manager": _TEACHING | _EDITING | {"moodle/site:accessallgroups", "moodle/course:enrolreview",
                                       "moodle/course:useremail", "moodle/course:update", "moodle/course:view",
                                       "moodle/user:viewalldetails", "moodle/category:viewhiddencategories",
                                       "moodle/category:manage", "moodle/user:update", "moodle/site:viewparticipants"},
    "student": frozenset({"moodle/course:viewparticipants", "moodle/user:viewdetails", "mod/assign:view", "mod/quiz:view",
                          "gradereport/user:view", "moodle/grade:view"}),
}

# The custom system role the README tells admins to create (section "The Moodle role"): read-only, no
# moodle/course:update or moodle/user:update, and no moodle/grade:viewhidden (hidden grades stay off phones).
README_ROLE = frozenset({
    "webservice/rest:use", "moodle/course:view", "moodle/course:viewhiddencourses",
    "moodle/category:viewhiddencategories", "moodle/course:viewparticipants", "moodle/course:enrolreview",
    "moodle/site:accessallgroups", "moodle/course:viewhiddenuserfields", "moodle/user:viewdetails",
    "moodle/user:viewhiddendetails", "moodle/user:viewalldetails", "moodle/site:viewuseridentity",
    "moodle/site:viewfullnames", "moodle/course:viewsuspendedusers",
    "moodle/grade:viewall", "gradereport/user:view", "report/progress:view", "report/completion:view",
    "mod/assign:view", "mod/assign:grade", "mod/quiz:view",
})

# What ../shared/moodle-real-4.5's `wsintegration` held: the capabilities lib/db/services.php declares for
# the 11 functions, without the two that write, plus grade:viewall, assign view/grade and the two reports.
DECLARED_ROLE = frozenset({
    "webservice/rest:use", "moodle/webservice:createtoken", "moodle/course:view", "moodle/course:viewhiddencourses",
    "moodle/category:viewhiddencategories", "moodle/user:viewdetails", "moodle/user:viewhiddendetails",
    "moodle/course:useremail", "moodle/site:accessallgroups", "moodle/course:viewparticipants",
    "moodle/grade:viewall", "gradereport/user:view", "mod/assign:view", "mod/assign:grade", "report/completion:view",
    "report/progress:view",
})

PROFILES = ("admin", "manager", "integration", "declared", "teacher")


@dataclass
class TokenUser:
    """The user a web-service token acts as."""

    user_id: int
    profile: str
    site_admin: bool = False
    system_caps: FrozenSet[str] = frozenset()
    course_roles: Dict[int, str] = field(default_factory=dict)  # course id -> role held there (teacher profile)
    prohibited: FrozenSet[str] = frozenset()  # CAP_PROHIBIT overrides at system level (site admins ignore them)

    def can(self, capability: str, course_id: Optional[int] = None) -> bool:
        if self.site_admin:
            return True  # is_siteadmin short-circuits has_capability, prohibits included
        if capability in self.prohibited:
            return False
        if capability in self.system_caps or capability in AUTHENTICATED:
            return True
        role = self.course_roles.get(course_id) if course_id is not None else None
        return role is not None and capability in ARCHETYPES.get(role, frozenset())

    def can_access_course(self, course_id: int, visible: bool) -> bool:
        """require_login($course): enrolled, or moodle/course:view ("view without participation"); hidden courses
        also need moodle/course:viewhiddencourses (lib/moodlelib.php require_login, is_viewing)."""
        if not visible and not self.can("moodle/course:viewhiddencourses", course_id):
            return False
        return self.site_admin or course_id in self.course_roles or self.can("moodle/course:view", course_id)


def token_user(profile: str, user_id: int) -> TokenUser:
    """The token user of a profile; a teacher's rights come from their course roles, filled in per call."""
    if profile not in PROFILES:
        raise ValueError(f"unknown token profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if profile == "admin":
        return TokenUser(user_id=user_id, profile=profile, site_admin=True)
    caps = {"manager": ARCHETYPES["manager"] | AUTHENTICATED, "integration": README_ROLE,
            "declared": DECLARED_ROLE, "teacher": AUTHENTICATED}[profile]
    return TokenUser(user_id=user_id, profile=profile, system_caps=frozenset(caps))
