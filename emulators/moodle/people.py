"""user_get_user_details (user/lib.php) and the group rules around it: which profile fields a caller sees.

Field by field, as read in user/lib.php of 4.1 and 4.5 (the two agree on the rules below; 4.0 still showed
phones to anyone with viewhiddenuserfields):
- firstname/lastname need moodle/site:viewfullnames (or site admin); username needs moodle/user:viewalldetails;
- phone1/phone2 only when listed in "Show user identity" AND the caller has moodle/site:viewuseridentity, or to a
  site admin; being the user yourself does not count; address likewise (it is no identity option: admins only);
- idnumber/institution/department: identity list, self or viewalldetails;
- "Hide user fields": hidden unless moodle/course:viewhiddenuserfields (course) / moodle/user:viewhiddendetails
  (user context); 'lastaccess' also hides lastcourseaccess;
- the whole user is skipped (null) when the caller lacks moodle/user:viewdetails and the user is no course contact.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set

from .access import TokenUser
from .school import ROLE_IDS, Group, School, User
from .site import Formatter

SEPARATEGROUPS, VISIBLEGROUPS = 1, 2

# Keys each function's returns structure declares; clean_returnvalue drops the rest.
ENROLLED_USER_KEYS = {
    "id", "username", "firstname", "lastname", "fullname", "email", "address", "phone1", "phone2", "department",
    "institution", "idnumber", "interests", "firstaccess", "lastaccess", "lastcourseaccess", "description",
    "descriptionformat", "city", "country", "profileimageurlsmall", "profileimageurl", "customfields", "groups",
    "roles", "preferences", "enrolledcourses",
}
USER_DESCRIPTION_KEYS = {
    "id", "username", "firstname", "lastname", "fullname", "email", "address", "phone1", "phone2", "department",
    "institution", "idnumber", "interests", "firstaccess", "lastaccess", "auth", "suspended", "confirmed", "lang",
    "calendartype", "theme", "timezone", "mailformat", "trackforums", "description", "descriptionformat", "city",
    "country", "profileimageurlsmall", "profileimageurl", "customfields", "preferences",
}
DEFAULT_FIELDS = ENROLLED_USER_KEYS | USER_DESCRIPTION_KEYS


class People:
    """Profile visibility for one caller, over one school and site."""

    def __init__(self, school: School, caller: TokenUser, fmt: Formatter) -> None:
        self.school = school
        self.caller = caller
        self.fmt = fmt
        self.site = fmt.site
        self._contacts: Dict[int, bool] = {}

    # ------------------------------------------------------------------ groups (lib/grouplib.php)
    def caller_groups(self, course_id: int) -> List[Group]:
        return self.school.groups_of(course_id, self.caller.user_id)

    def accessallgroups(self, course_id: int) -> bool:
        return self.caller.can("moodle/site:accessallgroups", course_id)

    def user_groups_visible(self, course_id: int, user_id: int) -> bool:
        """groups_user_groups_visible: no or visible groups, accessallgroups, or a shared group."""
        mode = self.school.courses[course_id].groupmode
        if mode != SEPARATEGROUPS or self.accessallgroups(course_id) or user_id == self.caller.user_id:
            return True
        mine = {g.id for g in self.caller_groups(course_id)}
        return bool(mine & {g.id for g in self.school.groups_of(course_id, user_id)})

    def group_visible(self, course_id: int, group_id: int) -> bool:
        """groups_group_visible."""
        mode = self.school.courses[course_id].groupmode
        if mode != SEPARATEGROUPS or self.accessallgroups(course_id):
            return True
        return group_id != 0 and group_id in {g.id for g in self.caller_groups(course_id)}

    def active_group(self, course_id: int) -> int:
        """groups_get_course_group for a web-service call, whose session starts empty every time: all (0) with
        accessallgroups, else the first allowed group by name (_group_verify_activegroup defaults)."""
        course = self.school.courses[course_id]
        if self.accessallgroups(course_id):
            return 0
        groups = sorted(self.school.groups.get(course_id, []), key=lambda g: g.name)
        mine = sorted(self.caller_groups(course_id), key=lambda g: g.name)
        allowed = groups if course.groupmode == VISIBLEGROUPS else mine
        if not allowed:
            return 0
        if course.groupmode != SEPARATEGROUPS and mine:
            return mine[0].id
        return allowed[0].id

    def can_view_profile(self, user_id: int, course_id: int) -> bool:
        """user_can_view_profile($user, $course) (user/lib.php): oneself, a course contact, or view details in the
        course with the groups rule ($CFG->forceloginforprofiles is on by default)."""
        if user_id == self.caller.user_id or self.is_course_contact(user_id):
            return True
        return ((self.caller.can("moodle/user:viewdetails", course_id)
                 or self.caller.can("moodle/user:viewalldetails", course_id))
                and user_id in self.school.enrolments[course_id] and self.user_groups_visible(course_id, user_id))

    # ------------------------------------------------------------------ identity and hidden fields
    def _identity(self, course_id: Optional[int]) -> Set[str]:
        if not self.caller.can("moodle/site:viewuseridentity", course_id):
            return set()  # core_user\fields::get_identity_fields
        return set(self.site.showuseridentity)

    def _hidden(self, course_id: Optional[int]) -> Set[str]:
        override = "moodle/course:viewhiddenuserfields" if course_id is not None else "moodle/user:viewhiddendetails"
        return set() if self.caller.can(override, course_id) else set(self.site.hiddenuserfields)

    def is_course_contact(self, user_id: int) -> bool:
        """has_coursecontact_role: $CFG->coursecontact defaults to editingteacher."""
        if user_id not in self._contacts:  # per user and call: one look per course, not one per enrolment
            self._contacts[user_id] = any((e := rows.get(user_id)) is not None and e.role == "editingteacher"
                                          for rows in self.school.enrolments.values())
        return self._contacts[user_id]

    def shares_course(self, user_id: int) -> bool:
        """enrol_sharing_course: both hold an active enrolment in one course."""
        return any((e := self.school.enrolments[c].get(user_id)) is not None and e.active for c in self.caller.course_roles)

    # ------------------------------------------------------------------ user_get_user_details
    def details(self, user: User, course_id: Optional[int], fields: Optional[Set[str]] = None) -> Optional[Dict[str, Any]]:
        caller, site = self.caller, self.site
        wanted = fields if fields else DEFAULT_FIELDS
        admin = caller.site_admin
        me = user.id == caller.user_id
        can_details = caller.can("moodle/user:viewdetails", course_id)
        if not me and not can_details and not self.is_course_contact(user.id):
            return None
        identity = self._identity(course_id)
        hidden = self._hidden(course_id)
        alldetails = caller.can("moodle/user:viewalldetails", course_id)
        d: Dict[str, Any] = {"id": user.id}

        def want(name: str) -> bool:
            return name in wanted

        if want("username") and (me or alldetails):
            d["username"] = user.username
        if admin or caller.can("moodle/site:viewfullnames", course_id):
            if want("firstname"):
                d["firstname"] = user.firstname
            if want("lastname"):
                d["lastname"] = user.lastname
        d["fullname"] = user.fullname
        if want("email") and user.email and (
            me or ("email" not in hidden and (self.shares_course(user.id)  # maildisplay 2 (the default)
                                               or (course_id is not None and caller.can("moodle/course:useremail", course_id))))
            or "email" in identity
        ):
            d["email"] = user.email
        for name in ("phone1", "phone2", "address"):
            value = getattr(user, name)
            if value and ((want(name) and name in identity) or admin):
                d[name] = value
        for name in ("department", "institution", "idnumber"):
            value = getattr(user, name)
            if want(name) and (value or name == "department") and (name in identity or me or alldetails):
                d[name] = value
        if want("firstaccess") and ("firstaccess" not in hidden or admin):
            d["firstaccess"] = user.firstaccess
        if want("lastaccess") and ("lastaccess" not in hidden or admin):
            d["lastaccess"] = user.lastaccess
        if course_id is not None and want("lastcourseaccess") and ("lastaccess" not in hidden or admin):
            e = self.school.enrolments[course_id].get(user.id)
            d["lastcourseaccess"] = e.lastcourseaccess if e else 0
        if want("auth") and (me or alldetails):
            d.update(auth=user.auth, confirmed=bool(user.confirmed), lang=user.lang, theme="", mailformat=1)
            if site.at_least("4.5"):
                d["trackforums"] = 0  # in the default fields from 4.5
        if want("suspended") and ("suspended" not in hidden or admin):
            d["suspended"] = bool(user.suspended)
        if want("timezone") and user.timezone and ("timezone" not in hidden or admin):
            d["timezone"] = user.timezone
        for name in ("city", "country"):
            value = getattr(user, name)
            if want(name) and value and (name not in hidden or admin):
                d[name] = value
        d["profileimageurlsmall"] = f"{self.fmt.site_url}/theme/image.php/boost/core/1/u/f2"
        d["profileimageurl"] = f"{self.fmt.site_url}/theme/image.php/boost/core/1/u/f1"
        if want("customfields") and user.customfields:
            fields_out = [dict(f) for f in user.customfields]
            if site.at_least("4.5"):  # 4.5 adds displayvalue beside the raw value
                for f in fields_out:
                    f["displayvalue"] = f["value"]
            d["customfields"] = fields_out
        if course_id is not None:
            self._course_parts(d, user, course_id, wanted, hidden)
        if me and want("preferences"):
            d["preferences"] = [{"name": "auth_forcepasswordchange", "value": "0"}]
        return d

    def _course_parts(self, d: Dict[str, Any], user: User, course_id: int, wanted: Set[str], hidden: Set[str]) -> None:
        school = self.school
        e = school.enrolments[course_id].get(user.id)
        if "roles" in wanted and e is not None:
            d["roles"] = [{"roleid": ROLE_IDS[e.role], "name": "", "shortname": e.role, "sortorder": 0}]
        if "groups" in wanted:
            groups = school.groups_of(course_id, user.id)
            if (school.courses[course_id].groupmode == SEPARATEGROUPS and not self.accessallgroups(course_id)
                    and user.id != self.caller.user_id):
                mine = {g.id for g in self.caller_groups(course_id)}
                groups = [g for g in groups if g.id in mine]
            if school.groups_of(course_id, user.id):  # the key is set whenever the user is in a group
                d["groups"] = [{"id": g.id, "name": self.fmt.string(g.name), "description": "", "descriptionformat": 1}
                               for g in groups]
        if "enrolledcourses" in wanted and "mycourses" not in hidden:
            own = [school.courses[c] for c in sorted(school.roles_of(user.id)) if c in school.courses]
            if own:  # the target's own active enrolments, not filtered by what the caller sees
                d["enrolledcourses"] = [{"id": c.id, "fullname": self.fmt.string(c.fullname),
                                         "shortname": self.fmt.string(c.shortname)} for c in own]

