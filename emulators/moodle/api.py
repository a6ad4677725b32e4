"""Web-service functions of the emulator, answering as Moodle answers the token's user.

Every function checks what the real one checks, in the same order, and fails with the same errorcode
(../shared/specs/moodle-web-services.md section R; the Moodle file is named beside each function). What a
caller sees depends on their capabilities (access.py), the site's settings and version (site.py) and group
membership (people.py). Optional fields are left out, not null; errors are `{"exception", "errorcode",
"message"}` bodies sent with HTTP 200.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import reports
from .access import VIEW_CAPABILITY, TokenUser
from .people import ENROLLED_USER_KEYS, SEPARATEGROUPS, USER_DESCRIPTION_KEYS, People
from .school import DAY, Assignment, Course, School
from .site import CallSettings, Formatter, SiteConfig

# The moodle_exception `module` (string file) each errorcode is thrown with, which get_exception_info puts in a batched
# sub-call's `moreinfourl` (lib/setuplib.php). Anything not listed is thrown with module '' or 'error' (dml_exception,
# required_capability_exception with its default $stringfile '', moodle_exception('notingroup'), 'nopermissiontoviewgrades'
# thrown with 'error').
MODULES = {
    "invalidparameter": "debug",  # lib/setuplib.php invalid_parameter_exception: ('invalidparameter', 'debug', ...)
    "codingerror": "debug",  # lib/setuplib.php coding_exception: parent::__construct('codingerror', 'debug', ...)
    "errorcoursecontextnotvalid": "webservice",  # external_api::validate_context: moodle_exception(..., 'webservice', ...)
    "accessexception": "webservice",  # webservice_access_exception: parent::__construct('accessexception', 'webservice', ...)
    "criteriaerror": "webservice",  # course/externallib.php get_categories: moodle_exception('criteriaerror', 'webservice', ...)
    "accessdenied": "admin",  # completion/classes/external.php: moodle_exception('accessdenied', 'admin')
    # reportbuilder/classes/exception/report_access_exception.php: parent::__construct($errorcode, 'reportbuilder')
    "errorreportview": "reportbuilder",
}


class WSError(Exception):
    """An error Moodle reports as an `exception` body; the class name is made version-specific when sent.

    `link` is the exception's $link (a required_capability_exception's is the context's URL, lib/setuplib.php); None
    is '' (get_exception_info then uses $CFG->wwwroot/). It only shows in a batched sub-call's exception (`info`)."""

    def __init__(self, exception: str, errorcode: Optional[str], message: str, debuginfo: Optional[str] = None,
                 link: Optional[str] = None) -> None:
        super().__init__(message)
        self.exception, self.errorcode, self.message, self.debuginfo = exception, errorcode, message, debuginfo
        self.link = link

    def info(self, site: SiteConfig, wwwroot: str, lang: str) -> Dict[str, Any]:
        """What external_api::call_external_function puts in a failed call's `exception` (lib/external/classes/
        external_api.php; lib/externallib.php before 4.2): get_exception_info($e) (lib/setuplib.php) with `a` unset,
        and `debuginfo` and `backtrace` unset unless debugging is DEBUG_DEVELOPER (not modelled: $CFG->debug here is at
        most DEBUG_NORMAL, SiteConfig.debugging). No `exception` class name, unlike the REST server's error body.
        moreinfourl is get_docs_url() ($CFG->docroot 'https://docs.moodle.org', $CFG->branch, current_language())
        then 'error/<module, or moodle for error>/<errorcode>'; link is the exception's, else the referer (a web-service
        client sends none), else $CFG->wwwroot/."""
        errorcode, message = self.errorcode, self.message
        if errorcode is None:  # not a moodle_exception (a PHP Error): 'generalexceptionmessage', "Exception - {$a}"
            errorcode, message = "generalexceptionmessage", f"Exception - {message}"
        module = MODULES.get(errorcode, "error")
        modulelink = "moodle" if module == "error" else module
        return {"message": message, "errorcode": errorcode, "link": self.link or f"{wwwroot}/",
                "moreinfourl": f"https://docs.moodle.org/{site.branch}/{lang}/error/{modulelink}/{errorcode}"}

    def body(self, site: SiteConfig) -> Dict[str, Any]:
        """webservice_rest_server::generate_error(): exception, errorcode only `if (isset($ex->errorcode))`, message."""
        out: Dict[str, Any] = {"exception": site.exception_class(self.exception)}
        if self.errorcode is not None:
            out["errorcode"] = self.errorcode
        out["message"] = self.message
        if self.debuginfo is not None and site.debugging:  # only with $CFG->debug >= DEBUG_NORMAL
            out["debuginfo"] = self.debuginfo
        return out


BATCH_FUNCTION = "tool_mobile_call_external_functions"


def invalid_parameter(detail: str) -> WSError:
    return WSError("invalid_parameter_exception", "invalidparameter", "Invalid parameter value detected", detail)


def missing_record(table: str) -> WSError:
    return WSError("dml_missing_record_exception", "invalidrecord", f"Can't find data record in database table {table}.")


# get_capability_string(): the translated name required_capability_exception puts in its message
CAPABILITY_NAMES = {
    "moodle/course:viewparticipants": "View participants",
    "moodle/course:enrolreview": "Review course enrolments",
    "moodle/role:review": "Review permissions for others",
    "moodle/site:accessallgroups": "Access all groups",
    "moodle/grade:viewall": "View grades of other users",
    "gradereport/user:view": "View your own grade report",
    "report/progress:view": "View activity completion reports",
    "moodle/course:view": "View courses without participation",
    "mod/assign:viewgrades": "View grades",
}


def no_permission(capability: str, link: Optional[str] = None) -> WSError:
    """required_capability_exception: errorcode nopermissions, the capability's translated name in the message, the
    context's URL as its link."""
    return WSError("required_capability_exception", "nopermissions",
                   f"Sorry, but you do not currently have permissions to do that ({CAPABILITY_NAMES[capability]}).",
                   link=link)


def context_not_valid(course_id: int) -> WSError:
    """validate_context failed (require_login): course/externallib.php and enrol/externallib.php wrap it."""
    return WSError("moodle_exception", "errorcoursecontextnotvalid",
                   f"You cannot execute functions in the course context (course id:{course_id}). The context error "
                   "message was: Course or activity not accessible.", "Not enrolled")


def _int(params: Dict[str, Any], name: str, default: Optional[int] = None) -> int:
    value = params.get(name, default)
    if value is None:
        raise invalid_parameter(f"{name} => Invalid parameter value detected (Missing required key in single structure: {name})")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid_parameter(f"{name} => Invalid parameter value detected (Invalid external api parameter: the value "
                                f"is \"{value}\", the server was expecting \"int\" type)") from None


def _list(value: Any) -> List[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    raise invalid_parameter("Only arrays accepted.")


def _options(params: Dict[str, Any]) -> Dict[str, str]:
    return {str(o.get("name")): str(o.get("value")) for o in _list(params.get("options")) if isinstance(o, dict)}


def _true(value: Any) -> bool:
    return str(value).lower() in ("1", "true")


def _param_text(text: Optional[str]) -> Optional[str]:
    """clean_param(PARAM_TEXT): strips tags but keeps multilang <span lang> / <lang> blocks (lib/moodlelib.php)."""
    if text is None:
        return None
    return re.sub(r"<(?!/?(?:span|lang)\b)[^>]*>", "", text)


class MoodleAPI:
    def __init__(self, school: School, site: Optional[SiteConfig] = None) -> None:
        self.school = school
        self.site = site or SiteConfig.recommended()
        self.functions: Dict[str, Callable[[Dict[str, Any]], Any]] = {
            "core_webservice_get_site_info": self.site_info,
            "core_course_get_categories": self.categories,
            "core_course_get_courses": self.courses,
            "core_course_get_courses_by_field": self.courses_by_field,
            "core_enrol_get_enrolled_users": self.enrolled_users,
            "core_user_get_users_by_field": self.users_by_field,
            "gradereport_user_get_grade_items": self.grade_items,
            "core_enrol_get_users_courses": self.users_courses,
            "core_completion_get_activities_completion_status": self.activities_completion,
            "core_course_get_contents": self.contents,
            "mod_assign_get_assignments": self.assignments,
            "mod_assign_get_submissions": self.submissions,
            "mod_assign_get_user_flags": self.user_flags,
            "mod_assign_get_participant": self.participant,
            "core_reportbuilder_retrieve_report": self.retrieve_report,
            # in every 3.7+ site's external_functions, but in no service unless the admin adds it (batch.py); the
            # server answers it (it needs the token and dispatches through the server's own path)
            BATCH_FUNCTION: self._batch_placeholder,
        }
        self.service_functions = set(self.functions) - {BATCH_FUNCTION}
        # $CFG->wwwroot: what site info reports, whatever address the emulator listens on
        self.base_url = "https://moodle.demo-academy.example"
        # per call: who asks and with which moodlewssetting* values
        self.caller: TokenUser = TokenUser(user_id=2, profile="admin", site_admin=True)
        self.fmt = Formatter(self.site, site_url=self.base_url)
        self.people = People(school, self.caller, self.fmt)
        self.settings = CallSettings()
        self.reports = reports.Reports()  # the site's custom reports (Site administration > Reports > Report builder)

    def call(self, function: str, params: Dict[str, Any], caller: TokenUser, settings: CallSettings) -> Any:
        """A single REST call: webservice_base_server::run's checks, then the function (`run`)."""
        if function not in self.functions:
            # external_api::external_function_info(..., MUST_EXIST)
            raise missing_record("external_functions")
        if function not in self.service_functions:
            # webservice_base_server::load_function_info: the name only in debuginfo
            raise WSError("webservice_access_exception", "accessexception", "Access control exception",
                          f"Access to the function {function}() is not allowed. There could be multiple reasons for "
                          "this: 1. The service linked to the user token does not contain the function. 2. The service "
                          "is user-restricted and the user is not listed. 3. The service is IP-restricted and the user "
                          "IP is not listed. 4. The service is time-restricted and the time has expired. 5. The token "
                          "is time-restricted and the time has expired.")
        return self.run(function, params, caller, settings)

    def run(self, function: str, params: Dict[str, Any], caller: TokenUser, settings: CallSettings) -> Any:
        """The function itself, as the caller, with these settings: what a single call and a batched sub-call share
        (each function does its own validate_context and require_capability)."""
        with self.school.lock:
            caller.course_roles = self.school.roles_of(caller.user_id)
            self.caller = caller
            self.settings = settings
            self.fmt = Formatter(self.site, settings, user_lang=self.school.users[caller.user_id].lang,
                                 site_url=self.base_url)
            self.people = People(self.school, caller, self.fmt)
            return self.functions[function](params)

    # ------------------------------------------------------------------ helpers
    def _course(self, params: Dict[str, Any], name: str = "courseid") -> Course:
        course = self.school.courses.get(_int(params, name))
        if course is None:
            raise missing_record("course")
        return course

    def _validate_context(self, course: Course) -> None:
        if not self.caller.can_access_course(course.id, bool(course.visible)):
            raise context_not_valid(course.id)

    def _require(self, capability: str, course_id: Optional[int]) -> None:
        if not self.caller.can(capability, course_id):
            raise no_permission(capability, self._context_url(course_id))

    def _context_url(self, course_id: Optional[int]) -> str:
        """context_course::get_url() (lib/accesslib.php): /course/view.php?id=N, '/' for the site course; the
        system context's is '/' too."""
        if course_id is None or course_id == 1:
            return f"{self.base_url}/"
        return f"{self.base_url}/course/view.php?id={course_id}"

    def _batch_placeholder(self, params: Dict[str, Any]) -> Any:
        raise AssertionError("tool_mobile_call_external_functions is answered by the server (batch.py)")

    def _warning(self, item: str, itemid: int, code: str, message: str) -> Dict[str, Any]:
        return {"item": item, "itemid": itemid, "warningcode": code, "message": message}

    # ------------------------------------------------------------------ webservice/externallib.php
    def site_info(self, params: Dict[str, Any]) -> Dict[str, Any]:
        s, me = self.school, self.school.users[self.caller.user_id]
        info = {
            "sitename": self.fmt.string(s.sitename), "username": me.username, "firstname": me.firstname,
            "lastname": me.lastname, "fullname": me.fullname, "lang": self.fmt.current_language, "userid": me.id,
            "siteurl": self.base_url, "userpictureurl": f"{self.base_url}/theme/image.php/boost/core/1/u/f1",
            "functions": [{"name": name, "version": self.site.version_number} for name in sorted(self.service_functions)],
            "downloadfiles": 1, "uploadfiles": 0, "release": self.site.release, "version": self.site.version_number,
            "mobilecssurl": "", "advancedfeatures": [{"name": "usecomments", "value": 1},
                                                     {"name": "enablecompletion", "value": 1}],
            "usercanmanageownfiles": True, "userquota": 104857600, "usermaxuploadfilesize": 2097152, "userhomepage": 1,
            "userprivateaccesskey": "0" * 32, "siteid": 1, "sitecalendartype": "gregorian",
            "usercalendartype": "gregorian", "userissiteadmin": self.caller.site_admin, "theme": "boost",
            "limitconcurrentlogins": 0,
        }
        if self.site.at_least("4.4"):
            info["policyagreed"] = 0  # @since 4.4
        return info

    # ------------------------------------------------------------------ course/externallib.php
    def categories(self, params: Dict[str, Any]) -> List[Dict[str, Any]]:
        """get_categories: hidden categories (and all beneath) left out without viewhiddencategories; idnumber,
        visible, timemodified and theme only with moodle/category:manage; sorted by sortorder as text."""
        criteria = {c.get("key"): c.get("value") for c in _list(params.get("criteria")) if isinstance(c, dict)}
        for key in criteria:
            if key not in ("id", "ids", "name", "parent", "idnumber", "visible", "theme"):
                raise WSError("moodle_exception", "criteriaerror", f"You can not search on this criteria: {key}")
        if "idnumber" in criteria and not self.caller.can("moodle/category:manage"):
            raise WSError("moodle_exception", "criteriaerror",
                          'You don\'t have the permissions to search on the "idnumber" field.')
        cats = self.school.categories
        see_hidden = self.caller.can("moodle/category:viewhiddencategories")

        def visible(cid: int) -> bool:
            return all(cats[int(p)].visible or see_hidden for p in cats[cid].path.strip("/").split("/"))

        chosen = []
        for c in cats.values():
            if "id" in criteria and str(c.id) != str(criteria["id"]):
                continue
            if "ids" in criteria and str(c.id) not in str(criteria["ids"]).split(","):
                continue
            if "parent" in criteria and str(c.parent) != str(criteria["parent"]):
                continue
            chosen.append(c)
        if criteria and str(params.get("addsubcategories", "1")) not in ("0", "false"):
            roots = {c.id for c in chosen}
            chosen = [c for c in cats.values() if c.id in roots or roots & {int(p) for p in c.path.strip("/").split("/")}]
        out = []
        for c in chosen:
            if not visible(c.id):
                continue
            coursecount = sum(1 for course in self.school.courses.values() if course.categoryid == c.id)
            row: Dict[str, Any] = {"id": c.id, "name": self.fmt.string(c.name), "description": c.description,
                                   "descriptionformat": 1, "parent": c.parent, "sortorder": c.id * 10000,
                                   "coursecount": coursecount, "depth": c.depth, "path": c.path}
            if self.caller.can("moodle/category:manage"):
                row.update(idnumber=c.idnumber, visible=c.visible, visibleold=c.visible, timemodified=c.timemodified,
                           theme="")
            out.append(row)
        return sorted(out, key=lambda r: str(r["sortorder"]))

    def _site_course(self) -> Dict[str, Any]:
        return {"id": 1, "shortname": "demo", "categoryid": 0, "fullname": self.fmt.string(self.school.sitename),
                "displayname": self.fmt.string(self.school.sitename), "summary": "", "summaryformat": 1,
                "format": "site", "startdate": 0, "enddate": 0, "showactivitydates": False,
                "showcompletionconditions": None}

    def courses(self, params: Dict[str, Any]) -> List[Dict[str, Any]]:
        """get_courses: one inaccessible course fails the whole call; 19 fields only with moodle/course:update."""
        ids = [int(i) for i in _list((params.get("options") or {}).get("ids"))]
        out = [] if ids and 1 not in ids else [self._site_course()]
        for cid, c in sorted(self.school.courses.items()):
            if ids and cid not in ids:
                continue
            self._validate_context(c)
            self._require("moodle/course:view", cid)
            row: Dict[str, Any] = {
                "id": c.id, "shortname": self.fmt.string(c.shortname), "categoryid": c.categoryid,
                "fullname": self.fmt.string(c.fullname), "displayname": self.fmt.string(c.fullname),
                "summary": c.summary, "summaryformat": 1, "format": c.format, "startdate": c.startdate,
                "enddate": c.enddate, "showactivitydates": True, "showcompletionconditions": True,
            }
            if self.caller.can("moodle/course:update", cid):
                row.update(numsections=self.school.spec.sections, categorysortorder=10000, idnumber=c.idnumber, showgrades=1,
                           newsitems=5, visible=c.visible,
                           maxbytes=0, showreports=0, groupmode=c.groupmode, groupmodeforce=0, defaultgroupingid=0,
                           timecreated=c.timecreated, timemodified=c.timemodified, enablecompletion=c.enablecompletion,
                           completionnotify=0, lang=c.lang, forcetheme="", courseformatoptions=[])
            if (c.visible or self.caller.can("moodle/course:update", cid)
                    or self.caller.can("moodle/course:viewhiddencourses", cid)):
                out.append(row)
        return out

    def courses_by_field(self, params: Dict[str, Any]) -> Dict[str, Any]:
        """get_courses_by_field: inaccessible courses are dropped or reduced to their public block, never an error;
        groupmode and enablecompletion for anyone who may enter the course; idnumber and times with course:update."""
        field, value = str(params.get("field", "")), str(params.get("value", ""))
        s = self.school
        warnings: List[Dict[str, Any]] = []
        courses: List[Optional[Course]]
        if field == "":
            courses = [None] + [s.courses[c] for c in sorted(s.courses)]  # None: the site course, id 1
        elif field in ("id", "ids"):
            wanted = [int(v) for v in value.split(",") if v.strip()] if field == "ids" else [_int(params, "value")]
            courses = []
            for cid in dict.fromkeys(wanted):
                if cid in s.courses:
                    courses.append(s.courses[cid])
                    if field == "ids" and not self.caller.can_access_course(cid, bool(s.courses[cid].visible)):
                        warnings.append(self._warning("course", cid, "1", "No access rights in course context"))
                elif field == "ids":
                    warnings.append(self._warning("course", cid, "1", "No access rights in course context"))
        elif field == "category":
            courses = [c for _, c in sorted(s.courses.items()) if c.categoryid == _int(params, "value")]
        elif field in ("shortname", "idnumber"):
            courses = [c for _, c in sorted(s.courses.items()) if getattr(c, field) == value]
        elif field == "sectionid" and self.site.at_least("4.5"):
            courses = [s.courses[v // 100] for v in [int(value)] if v // 100 in s.courses]
        else:
            raise invalid_parameter("Invalid field name")
        out = []
        for c in courses:
            if c is None:
                out.append(self._site_course())
                continue
            see_hidden = self.caller.can("moodle/course:viewhiddencourses", c.id)
            if not c.visible and not see_hidden and not self.caller.can("moodle/course:update", c.id):
                continue
            public = self._course_public(c)
            if not self.caller.can_access_course(c.id, bool(c.visible)):
                if c.visible or see_hidden:  # core_course_category::can_view_course_info
                    out.append(public)
                continue
            public.update(format=c.format, showgrades=1, newsitems=5, startdate=c.startdate, enddate=c.enddate,
                          maxbytes=0, showreports=0, visible=c.visible, groupmode=c.groupmode, groupmodeforce=0,
                          defaultgroupingid=0, enablecompletion=c.enablecompletion, completionnotify=0, lang=c.lang,
                          theme="", marker=0, filters=[], courseformatoptions=[])
            if self.caller.can("moodle/course:update", c.id):
                public.update(idnumber=c.idnumber, legacyfiles=0, calendartype="", timecreated=c.timecreated,
                              timemodified=c.timemodified, requested=0, cacherev=c.timemodified)
            out.append(public)
        return {"courses": out, "warnings": warnings}

    def _course_public(self, c: Course) -> Dict[str, Any]:
        category = self.school.categories.get(c.categoryid)
        row: Dict[str, Any] = {
            "id": c.id, "fullname": self.fmt.string(c.fullname), "displayname": self.fmt.string(c.fullname),
            "shortname": self.fmt.string(c.shortname), "categoryid": c.categoryid,
            "categoryname": self.fmt.string(category.name) if category else "", "sortorder": 10000 + c.id,
            "summary": c.summary, "summaryformat": 1, "summaryfiles": [], "overviewfiles": [], "showactivitydates": True,
            "showcompletionconditions": True, "contacts": [], "enrollmentmethods": ["manual"],
        }
        if self.site.at_least("4.2"):
            row["courseimage"] = f"{self.base_url}/pluginfile.php/1/course/generated/course.svg"
        return row

    # ------------------------------------------------------------------ enrol/externallib.php
    def enrolled_users(self, params: Dict[str, Any]) -> List[Dict[str, Any]]:
        """get_enrolled_users: the checks in their order, paging in SQL, then users the caller may not see dropped in
        PHP (short pages); a SEPARATEGROUPS course shows a caller without accessallgroups only shared groups."""
        options = _options(params)
        course = self._course(params)
        self._validate_context(course)
        cid = course.id
        if not (self.caller.can("moodle/course:viewparticipants", cid) or self.caller.can("moodle/course:enrolreview", cid)):
            raise no_permission("moodle/course:viewparticipants", self._context_url(cid))  # course_require_view_participants
        if options.get("withcapability"):
            self._require("moodle/role:review", cid)
        groupid = int(options.get("groupid", 0) or 0)
        if groupid and groupid not in {g.id for g in self.people.caller_groups(cid)}:
            self._require("moodle/site:accessallgroups", cid)
        only_active = _true(options.get("onlyactive", 0))
        if only_active or _true(options.get("onlysuspended", 0)):
            self._require("moodle/course:enrolreview", cid)
        fields = {f.strip() for f in options["userfields"].split(",")} | {"id", "fullname"} if options.get("userfields") else None
        rows = sorted(self.school.enrolments[cid].items())  # ORDER BY us.id ASC
        if only_active:
            rows = [(uid, e) for uid, e in rows if e.active]
        members: Optional[set] = None
        if groupid:
            members = {u for g in self.school.groups.get(cid, []) if g.id == groupid for u in g.members}
        elif course.groupmode == SEPARATEGROUPS and not self.people.accessallgroups(cid):
            mine = self.people.caller_groups(cid)
            if not mine:
                return []  # "User doesn't belong to any group, so he can't see any user"
            members = {u for g in mine for u in g.members}
        if members is not None:
            rows = [(uid, e) for uid, e in rows if uid in members]
        start = int(options.get("limitfrom", 0) or 0)
        limit = int(options.get("limitnumber", 0) or 0)
        rows = rows[start: start + limit] if limit else rows[start:]
        out = []
        for uid, _ in rows:
            d = self.people.details(self.school.users[uid], cid, fields)
            if d is not None:
                out.append({k: v for k, v in d.items() if k in ENROLLED_USER_KEYS})
        return out

    def users_courses(self, params: Dict[str, Any]) -> List[Dict[str, Any]]:
        """get_users_courses: the target's active enrolments, hidden courses left out unless the target may see them;
        courses the caller may not look into are skipped; progress only with report/completion:view."""
        userid = _int(params, "userid")
        s = self.school
        if userid not in s.users:
            raise missing_record("user")
        with_count = str(params.get("returnusercount", "1")) not in ("0", "false", "")
        same = userid == self.caller.user_id
        target_roles = s.roles_of(userid)
        out = []
        for cid, role in sorted(target_roles.items()):
            course = s.courses[cid]
            if not course.visible and role not in ("editingteacher", "teacher"):
                continue  # enrol_get_users_courses: the target lacks moodle/course:viewhiddencourses
            if not self.caller.can_access_course(cid, bool(course.visible)):
                continue
            if not same and not ((self.caller.can("moodle/course:viewparticipants", cid)
                                  or self.caller.can("moodle/course:enrolreview", cid))
                                 and self.people.can_view_profile(userid, cid)):
                continue
            e = s.enrolments[cid][userid]
            d: Dict[str, Any] = {
                "id": cid, "shortname": self.fmt.string(course.shortname), "fullname": self.fmt.string(course.fullname),
                "displayname": self.fmt.string(course.fullname)}
            if with_count:
                d["enrolledusercount"] = len(s.enrolments[cid])
            d.update({"idnumber": course.idnumber, "visible": course.visible, "summary": course.summary,
                      "summaryformat": 1, "format": course.format})
            if self.site.at_least("4.2"):
                d["courseimage"] = f"{self.base_url}/pluginfile.php/1/course/generated/course.svg"
            d.update({"showgrades": True, "lang": course.lang,
                      "enablecompletion": bool(course.enablecompletion), "completionhascriteria": False,
                      "completionusertracked": bool(course.enablecompletion), "category": course.categoryid})
            if course.enablecompletion and (same or self.caller.can("report/completion:view", cid)):
                tracked = [m for m in s.modules[cid] if m.completion]
                done = sum(1 for m in tracked if s.completion(m, userid)[0] in (1, 2))
                # progress::get_course_progress_percentage (completion/classes/progress.php) is null unless
                # completion_info::is_tracked_user: enrolled, actively, with moodle/course:isincompletionreports (the
                # student archetype's; lib/completionlib.php): a teacher has none
                if tracked and role == "student" and e.active:
                    d["progress"] = done / len(tracked) * 100.0
                if tracked:
                    d["completed"] = done == len(tracked)
            d.update({"startdate": course.startdate, "enddate": course.enddate, "marker": 0})
            can_see_access = same or "lastaccess" not in self.site.hiddenuserfields or self.caller.can(
                "moodle/course:viewhiddenuserfields", cid)
            if can_see_access and e.lastcourseaccess:
                d["lastaccess"] = e.lastcourseaccess
            d.update({"isfavourite": False, "hidden": False, "overviewfiles": [], "showactivitydates": True,
                      "showcompletionconditions": True, "timemodified": course.timemodified})
            out.append(d)
        return out

    # ------------------------------------------------------------------ user/externallib.php
    def users_by_field(self, params: Dict[str, Any]) -> List[Dict[str, Any]]:
        """get_users_by_field: no capability check; users the caller may not see, or whose searched field they may
        not see, are left out silently (user_get_user_details_courses)."""
        field = params.get("field")
        if field not in ("id", "idnumber", "username", "email"):
            raise WSError("coding_exception", "codingerror", "Coding error detected, it must be fixed by a programmer: "
                          "invalid field parameter")
        values = {str(v) for v in _list(params.get("values"))}
        out = []
        for user in sorted(self.school.users.values(), key=lambda u: u.id):
            if str(getattr(user, field)) not in values:
                continue
            d = self._user_profile(user)
            if d is not None and d.get(field) not in (None, ""):
                out.append({k: v for k, v in d.items() if k in USER_DESCRIPTION_KEYS})
        return out

    def _user_profile(self, user: Any) -> Optional[Dict[str, Any]]:
        """The system profile when the caller may view details in the user context, else the last course where
        user_can_view_profile passes."""
        if (self.caller.can("moodle/user:viewdetails") or user.id == self.caller.user_id
                or self.people.is_course_contact(user.id)):
            return self.people.details(user, None)
        chosen = None
        for cid in sorted(self.school.roles_of(user.id)):  # the last course that allows it wins: no break in Moodle
            if self.people.can_view_profile(user.id, cid):
                chosen = cid
        return self.people.details(user, chosen) if chosen is not None else None

    # ------------------------------------------------------------------ grade/report/user/classes/external/user.php
    def grade_items(self, params: Dict[str, Any]) -> Dict[str, Any]:
        """get_grade_items: check_report_access, then groupid=0 resolved to the caller's active group (all users
        only with accessallgroups or no group mode), active enrolments with a gradebook role, sorted by name."""
        course = self._course(params)
        userid = _int(params, "userid", 0)
        groupid = _int(params, "groupid", 0)
        s, cid = self.school, course.id
        self._validate_context(course)
        self._require("gradereport/user:view", cid)
        own = userid == self.caller.user_id
        if userid == 0:
            self._require("moodle/grade:viewall", cid)
        else:
            if userid not in s.users:
                raise missing_record("user")
            if not (own and self.site.at_least("4.5")) and not self.people.user_groups_visible(cid, userid):
                raise WSError("moodle_exception", "notingroup", "Sorry, but you need to be part of a group to see this page.")
            if not self.caller.can("moodle/grade:viewall", cid) and not (own and self.caller.can("moodle/grade:view", cid)):
                raise WSError("moodle_exception", "nopermissiontoviewgrades", "Can not view grades.")
        if not (own and self.site.at_least("4.5")):  # 4.1 resolves groups even for one's own grades
            if groupid:
                if not self.people.group_visible(cid, groupid):
                    raise WSError("moodle_exception", "notingroup", "Sorry, but you need to be part of a group to see this page.")
            elif course.groupmode:
                groupid = self.people.active_group(cid)
                if not self.people.group_visible(cid, groupid):
                    raise WSError("moodle_exception", "notingroup", "Sorry, but you need to be part of a group to see this page.")
        if userid:
            user_ids = [userid]
        else:  # graded_users_iterator: gradebook roles, active enrolments (grade_report_showonlyactiveenrol = 1)
            user_ids = [uid for uid, e in s.enrolments[cid].items() if e.role == "student" and e.active]
            if groupid:
                user_ids = [u for u in user_ids if u in {m for g in s.groups.get(cid, []) if g.id == groupid for m in g.members}]
            user_ids.sort(key=lambda u: (s.users[u].lastname, s.users[u].firstname, u))
        usergrades = []
        for uid in user_ids:
            user = s.users[uid]
            usergrades.append({"courseid": cid, "courseidnumber": course.idnumber, "userid": uid,
                               "userfullname": user.fullname, "useridnumber": user.idnumber, "maxdepth": 2,
                               "gradeitems": self._grade_rows(course, uid)})
        return {"usergrades": usergrades, "warnings": []}

    def _grade_rows(self, course: Course, uid: int) -> List[Dict[str, Any]]:
        """fill_table_recursive (grade/report/user/classes/report/user.php) for one user."""
        s, cid = self.school, course.id
        viewhidden = self.caller.can("moodle/grade:viewhidden", cid)
        viewall = self.caller.can("moodle/grade:viewall", cid)
        showrange = self.site.grade_report_showrange and course.showrange
        blank_totals = not viewhidden and self.site.grade_report_showtotalsifcontainhidden == 0 and s.has_hidden_grade(cid, uid)
        rows = []
        for item in s.grade_items[cid]:
            if item.hidden and not viewhidden:
                continue  # permanently hidden: removed for callers without moodle/grade:viewhidden
            raw, when = s.grade(item, uid)
            if item.itemtype in ("course", "category") and blank_totals:
                raw = None  # blank_hidden_total_and_adjust_bounds
            name = item.itemname
            if name is not None and not self.site.at_least("4.5"):
                name = _param_text(name)  # PARAM_TEXT up to 4.2; PARAM_RAW from 4.5 (MDL-80017)
            formatted = "-" if raw is None else f"{raw:.2f}"
            if raw is not None and item.gradepass > item.grademin and not item.hidden:
                passed = raw >= item.gradepass  # is_passed(): a pass/fail icon before the value
                formatted = (f'<i class="icon fa {"fa-check text-success" if passed else "fa-times text-danger"} fa-fw inline" '
                             f'title="{"Pass" if passed else "Fail"}" role="img" aria-label="{"Pass" if passed else "Fail"}"></i>'
                             + formatted)
            row: Dict[str, Any] = {
                "id": item.id, "itemname": name, "itemtype": item.itemtype, "itemmodule": item.itemmodule,
                "iteminstance": item.iteminstance, "itemnumber": 0 if item.itemtype in ("mod", "manual") else None,
                "idnumber": "" if item.itemtype in ("mod", "manual") else None,
                "categoryid": item.categoryid if item.itemtype in ("mod", "manual") else None,
                "outcomeid": None, "scaleid": None, "locked": False if viewall else None,
            }
            if item.cmid is not None:
                row["cmid"] = item.cmid
            row.update({
                "graderaw": raw, "gradedatesubmitted": when if raw is not None else None,
                "gradedategraded": when if raw is not None else None, "gradehiddenbydate": False,
                "gradeneedsupdate": False, "gradeishidden": item.hidden, "gradeislocked": False if viewall else None,
                "gradeisoverridden": False if viewall else None, "gradeformatted": formatted,
            })
            if showrange:
                row.update(grademin=item.grademin, grademax=item.grademax,
                           rangeformatted=f"{item.grademin:g}&ndash;{item.grademax:g}")
            pct = None if raw is None else (raw - item.grademin) / (item.grademax - item.grademin) * 100
            row["percentageformatted"] = "-" if pct is None else f"{pct:.2f} %"
            if self.site.grade_report_showlettergrade:
                row["lettergradeformatted"] = "-" if pct is None else _letter(pct)
            row.update(feedback="", feedbackformat=0)
            rows.append(row)
        return rows

    # ------------------------------------------------------------------ completion/classes/external.php
    def activities_completion(self, params: Dict[str, Any]) -> Dict[str, Any]:
        """get_activities_completion_status: report/progress:view for another user, then the group check
        (accessdenied); the target's enrolment is not checked."""
        course = self._course(params)
        userid = _int(params, "userid")
        s = self.school
        if userid not in s.users:
            raise missing_record("user")
        self._validate_context(course)
        if userid != self.caller.user_id:
            self._require("report/progress:view", course.id)
            if not self.people.user_groups_visible(course.id, userid):
                raise WSError("moodle_exception", "accessdenied", "Access denied")
        e = s.enrolments[course.id].get(userid)
        tracked_user = bool(e and e.active and e.role == "student")
        statuses = []
        for m in s.modules[course.id]:
            if not m.completion:
                continue
            state, when = s.completion(m, userid) if course.enablecompletion else (0, 0)
            status: Dict[str, Any] = {
                "cmid": m.cmid, "modname": m.modname, "instance": m.instance, "state": state, "timecompleted": when,
                "tracking": m.completion, "overrideby": None, "valueused": False,
                "hascompletion": bool(course.enablecompletion), "isautomatic": m.completion == 2,
                "istrackeduser": tracked_user, "uservisible": bool(m.visible), "details": []}
            if self.site.at_least("4.5"):
                status["isoverallcomplete"] = state in (1, 2)
            statuses.append(status)
        return {"statuses": statuses, "warnings": []}

    # ------------------------------------------------------------------ course/externallib.php get_course_contents
    def contents(self, params: Dict[str, Any]) -> List[Dict[str, Any]]:
        """get_course_contents for the caller: sections and activities as cm_info/section_info compute them for the
        token's user (lib/modinfolib.php), each activity's dates as its activity_dates class gives them to that user.
        $CFG->enableavailability is on (Moodle's default, and the captured 4.5 site sent `availability`); the
        course format's hiddensections is 1, "hidden sections are completely invisible" (the captured site's courses).
        Not modelled: the options (excludemodules, includestealthmodules, sectionid, cmid...)."""
        course = self._course(params)
        self._validate_context(course)
        s, cid, can = self.school, course.id, self.caller.can
        can_update = can("moodle/course:update", cid)
        if not (can_update or course.visible or can("moodle/course:viewhiddencourses", cid)):
            return []
        out = []
        for section_id, number, name in sorted(s.sections[course.id], key=lambda row: row[1]):
            visible = 0 if section_id in s.hidden_sections else 1
            # section_info::get_available(): the section's own conditions, for the caller
            available, info = self._available(s.section_availability.get(section_id), bool(visible), cid)
            # section_info::get_uservisible()
            uservisible = not ((not visible and not can("moodle/course:viewhiddensections", cid))
                               or (not available and not can("moodle/course:ignoreavailabilityrestrictions", cid)))
            section: Dict[str, Any] = {"id": section_id, "name": self.fmt.string(name), "visible": visible, "summary": "",
                                       "summaryformat": 1, "section": number, "hiddenbynumsections": 0,
                                       "uservisible": uservisible}
            if info:
                section["availabilityinfo"] = info
            section["modules"] = [md for m in s.modules[course.id] if m.section == number
                                  for md in [self._content_module(course, m, available)] if md is not None]
            # core_courseformat\base::is_section_visible(): shown if the caller may enter it, or it is visible but
            # restricted with a reason to show; hidden sections stay invisible (hiddensections = 1)
            if not (uservisible or (visible and not available and info)):
                continue
            if not uservisible:  # "Remove section and modules information if the section is not visible for the user"
                section["modules"] = []
            out.append(section)
        return out

    def _available(self, availability: Optional[str], visible: bool, cid: int) -> Tuple[bool, str]:
        r"""core_availability\info::is_available() for the caller: (available, the text shown when it is not).

        Conditions are checked for the caller (an "&" tree needs all, a "|" tree one): a date against the site's clock
        (availability_date), a completion condition holds only for a student who completed the activity
        (availability_completion). The text (tree::get_full_information_recursive) is for a visible item only, from
        the failed conditions shown to whom they keep out ("showc"): one alone in its standalone wording, several as
        "Not available unless:" and a list (the availability renderer's multiple_messages, its markup simplified).
        Dates use strftimedate at midnight, else strftimedatetime, in the caller's time zone (UTC here);
        info::format_info puts the activity's name for <AVAILABILITY_CMNAME_n/>."""
        if availability is None:
            return True, ""
        tree = json.loads(availability)
        s = self.school
        shows = tree.get("showc") or [tree.get("show", True)] * len(tree["c"])
        results, texts = [], []
        for condition, show in zip(tree["c"], shows, strict=True):
            if condition["type"] == "date":
                t, since = condition["t"], condition["d"] == ">="
                ok = s.clock >= t if since else s.clock < t
                when = datetime.fromtimestamp(t if since or t % DAY else t - DAY, timezone.utc)
                midnight = t % DAY == 0  # usergetmidnight($time) == $time; "until end of" the day before
                stamp = f"{when.day} {when:%B %Y}" + ("" if midnight else f", {int(when.strftime('%I'))}:{when:%M %p}")
                wording = {(True, False): ("Available from", "It is after"),
                           (True, True): ("Available from", "It is on or after"),
                           (False, False): ("Available until", "It is before"),
                           (False, True): ("Available until end of", "It is before end of")}[(since, midnight)]
                standalone, description = (f"{w} <strong>{stamp}</strong>" for w in wording)  # lang/en strings
            else:  # completion; e 1: complete (COMPLETION_COMPLETE or _PASS), 0: not complete
                target = next(m for m in s.modules[cid] if m.cmid == condition["cm"])
                e = s.enrolments[cid].get(self.caller.user_id)
                done = bool(e and e.role == "student" and s.completion(target, self.caller.user_id)[0] in (1, 2))
                ok = done if condition.get("e", 1) == 1 else not done
                description = (f"The activity <strong>{self.fmt.string(target.name)}</strong> is marked "
                               f"{'complete' if condition.get('e', 1) == 1 else 'incomplete'}")
                # condition::get_standalone_description(): list_root_and ("Not available unless:") and the description
                standalone = f"Not available unless: {description}"
            results.append(ok)
            if not ok and show:
                texts.append((standalone, description))
        if (all(results) if tree.get("op", "&") == "&" else any(results)):
            return True, ""
        if not visible or not texts:
            return False, ""
        if len(texts) == 1:
            return False, texts[0][0]
        return False, "Not available unless:<ul>" + "".join(f"<li>{d}</li>" for _, d in texts) + "</ul>"

    def _content_module(self, course: Course, m: Any, section_available: bool) -> Optional[Dict[str, Any]]:
        """One activity of get_course_contents, or None where the caller may neither use it nor see it listed."""
        cid, can = course.id, self.caller.can
        # cm_info::obtain_dynamic_data(): its own conditions, then the parent section's
        available, info = self._available(m.availability, bool(m.visible), cid)
        available = available and section_available
        # cm_info::update_user_visible()
        uservisible = not ((not m.visible and not can("moodle/course:viewhiddenactivities", cid))
                           or (not available and not can("moodle/course:ignoreavailabilityrestrictions", cid)))
        oncoursepage = uservisible and bool(m.visibleoncoursepage or any(can(c, cid) for c in (
            "moodle/course:manageactivities", "moodle/course:activityvisibility", "moodle/course:viewhiddenactivities")))
        if not uservisible and m.visibleoncoursepage and info:
            oncoursepage = True  # listed greyed out, with the reason
        view = VIEW_CAPABILITY.get(m.modname)
        if view and not can(view, cid):
            # cm_info::update_user_visible(): is_user_access_restricted_by_capability() sets uservisible false and
            # clears availableinfo ("Ensure activity is completely hidden from the user"): not listed at all
            return None
        if not uservisible and not oncoursepage:
            return None  # "Stop here if the module is not visible to the user on the course main page"
        md: Dict[str, Any] = {
            "id": m.cmid, "url": f"{self.base_url}/mod/{m.modname}/view.php?id={m.cmid}",
            "name": self.fmt.string(m.name), "instance": m.instance, "contextid": 5000 + m.cmid,
            "visible": m.visible, "uservisible": uservisible}
        if info:
            md["availabilityinfo"] = info
        md.update({
            "visibleoncoursepage": m.visibleoncoursepage,
            "modicon": f"{self.base_url}/theme/image.php/boost/{m.modname}/1/monologo",
            "modname": m.modname, "modplural": m.modname + "s"})
        # "Availability date (also send to user who can see hidden module)"
        if can("moodle/course:viewhiddenactivities", cid) or can("moodle/course:update", cid):
            md["availability"] = m.availability
        md.update({"indent": 0, "onclick": "", "afterlink": None, "customdata": self._customdata(m),
                   "noviewlink": False, "completion": m.completion, "downloadcontent": 1,
                   "dates": self._activity_dates(course, m)})
        return md

    def _assignment_of(self, m: Any) -> Optional[Assignment]:
        return next((a for a in self.school.assignments[m.course_id] if a.cmid == m.cmid), None)

    def _caller_dates(self, m: Any) -> Dict[str, Any]:
        """cm->customdata after the module's cm_info_dynamic for the caller: mod/assign/lib.php
        assign_get_coursemodule_info (duedate, cutoffdate, allowsubmissionsfromdate when set) with the caller's user
        or group override (mod_assign_cm_info_dynamic); mod/quiz/lib.php quiz_get_coursemodule_info (timeopen,
        timeclose). Values read from the database are strings; the captured 4.5 site sent duedate as a number."""
        if m.modname == "assign":
            a = self._assignment_of(m)
            if a is None:
                return {}
            out: Dict[str, Any] = {}
            due = self.school.override_due_date(a, self.caller.user_id)
            if due:
                out["duedate"] = due
            if a.cutoffdate:
                out["cutoffdate"] = str(a.cutoffdate)
            if a.allowsubmissionsfromdate:
                out["allowsubmissionsfromdate"] = str(a.allowsubmissionsfromdate)
            return out
        if m.modname == "quiz":
            return {k: str(v) for k, v in (("timeopen", m.timeopen), ("timeclose", m.timeclose)) if v}
        return {}

    def _customdata(self, m: Any) -> str:
        """json_encode($cm->customdata): the completion rules first when completion is automatic, then the dates."""
        data: Dict[str, Any] = {}
        if m.completion == 2 and m.modname == "assign":
            data["customcompletionrules"] = {"completionsubmit": "1"}
        elif m.completion == 2 and m.modname == "quiz":
            data["customcompletionrules"] = {"completionpassorattemptsexhausted": [], "completionminattempts": "0"}
        data.update(self._caller_dates(m))
        return json.dumps(data, separators=(",", ":")) if data else '""'

    def _activity_dates(self, course: Course, m: Any) -> List[Dict[str, Any]]:
        r"""\core\activity_dates::get_dates_for_module($cm, $USER->id): the caller's own dates. mod/assign/classes/
        dates.php: "Opens:"/"Opened:" (allowsubmissionsfromdate), "Due:" (duedate), the activity group's override for
        a caller who can view grades; mod/quiz/classes/dates.php: "Opens:"/"Opened:" (timeopen), "Closes:"/"Closed:"
        (timeclose). Other modules have no dates class: []."""
        now, dates = self.school.clock, self._caller_dates(m)
        if m.modname == "assign":
            opens, due = int(dates.get("allowsubmissionsfromdate", 0)), int(dates.get("duedate", 0))
            a = self._assignment_of(m)
            group = self.people.active_group(course.id) if course.groupmode else 0  # groups_get_activity_group
            if a is not None and group and self._can_view_grades(course.id):
                due = self.school.group_overrides.get((a.id, group), due)
            out = []
            if opens:
                out.append({"label": "Opens:" if opens > now else "Opened:", "timestamp": opens,
                            "dataid": "allowsubmissionsfromdate"})
            if due:
                out.append({"label": "Due:", "timestamp": due, "dataid": "duedate"})
            return out
        if m.modname == "quiz":
            out = []
            if m.timeopen:
                out.append({"label": "Opens:" if m.timeopen > now else "Opened:", "timestamp": m.timeopen,
                            "dataid": "timeopen"})
            if m.timeclose:
                out.append({"label": "Closes:" if m.timeclose > now else "Closed:", "timestamp": m.timeclose,
                            "dataid": "timeclose"})
            return out
        return []

    # ------------------------------------------------------------------ mod/assign/externallib.php
    def assignments(self, params: Dict[str, Any]) -> Dict[str, Any]:
        """get_assignments: enrolment is the gate unless includenotenrolledcourses=1 (then require_login: course:view
        for someone not enrolled); dates are the caller's own, which for staff means the assignment's."""
        s = self.school
        ids = [int(i) for i in _list(params.get("courseids"))]
        include = _true(params.get("includenotenrolledcourses", 0))
        mine = {cid for cid in self.caller.course_roles
                if s.courses[cid].visible or self.caller.can("moodle/course:viewhiddencourses", cid)}
        warnings: List[Dict[str, Any]] = []
        if not ids:
            chosen = sorted(mine)
        elif include:
            chosen = ids
        else:
            chosen = []
            for cid in ids:
                if cid in mine:
                    chosen.append(cid)
                else:
                    warnings.append(self._warning("course", cid, "2",
                                                  "User is not enrolled or does not have requested capability"))
        courses = []
        for cid in chosen:
            course = s.courses.get(cid)
            if course is None or not self.caller.can_access_course(cid, bool(course.visible)):
                warnings.append(self._warning("course", cid, "1",
                                              "No access rights in course context Course or activity not accessible."))
                continue
            rows = []
            for a in s.assignments[cid]:
                if not self.caller.can("mod/assign:view", cid):
                    warnings.append(self._warning("module", a.cmid, "1", "No access rights in module context"))
                    continue
                row: Dict[str, Any] = {
                    "id": a.id, "cmid": a.cmid, "course": cid, "name": self.fmt.string(a.name), "nosubmissions": 0,
                    "submissiondrafts": 0, "sendnotifications": 0, "sendlatenotifications": 0,
                    "sendstudentnotifications": 1, "duedate": a.duedate,
                    "allowsubmissionsfromdate": a.allowsubmissionsfromdate, "grade": 100,
                    "timemodified": a.timemodified, "completionsubmit": 1, "cutoffdate": a.cutoffdate,
                    "gradingduedate": a.duedate + 7 * DAY, "teamsubmission": a.teamsubmission,
                    "requireallteammemberssubmit": 0, "teamsubmissiongroupingid": 0, "blindmarking": 0,
                    "hidegrader": 0, "revealidentities": 0, "attemptreopenmethod": "untilpass", "maxattempts": -1,
                    "markingworkflow": 0, "markingallocation": 0, "requiresubmissionstatement": 0,
                    "preventsubmissionnotingroup": a.teamsubmission, "configs": [], "intro": "", "introformat": 1,
                    "introfiles": [], "introattachments": [], "timelimit": 0, "submissionattachments": 0,
                }
                if self.site.at_least("4.5"):
                    row["markinganonymous"] = 0
                rows.append(row)
            courses.append({"id": cid, "fullname": self.fmt.string(course.fullname),
                            "shortname": self.fmt.string(course.shortname), "timemodified": course.timemodified,
                            "assignments": rows})
        return {"courses": courses, "warnings": warnings}

    def _assignment(self, assignment_id: int) -> Optional[Assignment]:
        return next((a for rows in self.school.assignments.values() for a in rows if a.id == assignment_id), None)

    def _can_view_grades(self, cid: int) -> bool:
        return self.caller.can("mod/assign:grade", cid) or self.caller.can("mod/assign:viewgrades", cid)

    def submissions(self, params: Dict[str, Any]) -> Dict[str, Any]:
        """get_submissions: require_view_grades per assignment (a warning, not an error); the latest attempt per
        (user, group) with timemodified >= since; students whose enrolment is not active only with
        moodle/course:viewsuspendedusers; team assignments answer with the group's row (userid 0)."""
        s = self.school
        since = int(params.get("since", 0) or 0)
        before = int(params.get("before", 0) or 0)
        out, warnings = [], []
        for aid in [int(i) for i in _list(params.get("assignmentids"))]:
            a = self._assignment(aid)
            if a is None:
                continue  # an unknown id is left out without a word
            cid = a.course_id
            if not self.caller.can_access_course(cid, bool(s.courses[cid].visible)) or not self._can_view_grades(cid):
                warnings.append(self._warning("assignment", aid, "1", "No access rights in module context"))
                continue
            candidates = []
            if a.teamsubmission:
                for group in s.groups.get(cid, []):
                    got = s.group_submission(a, group)
                    if got and any(self.people.user_groups_visible(cid, m) for m in group.members):
                        candidates.append((0, group.id, got))
            else:
                see_inactive = self.caller.can("moodle/course:viewsuspendedusers", cid)
                for uid in s.students_of(cid):
                    got = s.submission(a, uid)
                    if got and (s.enrolments[cid][uid].active or see_inactive):
                        candidates.append((uid, 0, got))
            subs: List[Dict[str, Any]] = []
            for uid, gid, (status, when) in candidates:
                if when < since or (before and when > before):
                    continue
                subs.append({"id": a.id * 100_000 + (uid or gid), "userid": uid, "attemptnumber": 0,
                             "timecreated": min(when, a.allowsubmissionsfromdate + DAY), "timemodified": when,
                             "timestarted": None, "status": status, "groupid": gid, "plugins": [],
                             "gradingstatus": "notgraded"})
            if not subs:
                warnings.append(self._warning("module", aid, "3", "No submissions found"))
            out.append({"assignmentid": a.id, "submissions": subs})
        return {"assignments": out, "warnings": warnings}

    def user_flags(self, params: Dict[str, Any]) -> Dict[str, Any]:
        """get_user_flags: mod/assign:grade per assignment; only users with an assign_user_flags row (an extension
        granted, or graded), extensionduedate 0 meaning none."""
        s = self.school
        out, warnings = [], []
        for aid in [int(i) for i in _list(params.get("assignmentids"))]:
            a = self._assignment(aid)
            if a is None:
                continue
            if not self.caller.can("mod/assign:grade", a.course_id):
                warnings.append(self._warning("assignment", aid, "1", "No access rights in module context"))
                continue
            flags = []
            for uid in s.students_of(a.course_id):
                extension = s.extensions.get((aid, uid), 0)
                if extension:
                    flags.append({"id": aid * 100_000 + uid, "userid": uid, "locked": 0, "mailed": 0,
                                  "extensionduedate": extension, "workflowstate": "", "allocatedmarker": 0})
            if not flags:
                warnings.append(self._warning("assignment", aid, "3", "No user flags found"))
                continue
            out.append({"assignmentid": aid, "userflags": flags})
        return {"assignments": out, "warnings": warnings}

    def participant(self, params: Dict[str, Any]) -> Dict[str, Any]:
        """get_participant: one student's dates with their user or group override applied (not the extension)."""
        s = self.school
        a = self._assignment(_int(params, "assignid"))
        if a is None:
            raise missing_record("assign")
        userid = _int(params, "userid")
        if not self._can_view_grades(a.course_id):  # require_capability in the module context: its URL is the link
            raise WSError("required_capability_exception", "nopermission",
                          "Sorry, but you do not currently have permissions to do that (View grades).",
                          link=f"{self.base_url}/mod/assign/view.php?id={a.cmid}")
        e = s.enrolments[a.course_id].get(userid)
        if e is None or e.role != "student":
            raise WSError("moodle_exception", "usernotincourse", "User is not enrolled in this course")
        groups = s.groups_of(a.course_id, userid)
        user = s.users[userid]
        return {"id": userid, "fullname": user.fullname, "submitted": s.submitted_by(a, userid) is not None,
                "requiregrading": False, "grantedextension": (a.id, userid) in s.extensions, "blindmarking": False,
                "allowsubmissionsfromdate": a.allowsubmissionsfromdate, "duedate": s.override_due_date(a, userid),
                "cutoffdate": a.cutoffdate,
                "duedatestr": "", **({"groupid": groups[0].id, "groupname": groups[0].name} if groups else {})}

    # ------------------------------------------------------------------ reportbuilder/classes/external/reports/retrieve.php
    def retrieve_report(self, params: Dict[str, Any]) -> Dict[str, Any]:
        """core_reportbuilder_retrieve_report (4.1+): validate_parameters, the report (invalidrecord when unknown), the
        system context, permission::require_can_view_report (errorreportview), then the details and one page of data,
        every cell display text in the current language and the token user's timezone (reports.py)."""
        unexpected = sorted(set(params) - {"reportid", "page", "perpage"})
        if unexpected:
            raise invalid_parameter(f"Unexpected keys ({', '.join(unexpected)}) detected in parameter array.")
        reportid = _int(params, "reportid")
        page, perpage = _int(params, "page", 0), _int(params, "perpage", 10)
        if reportid <= 0:
            # `new report(0)` reads nothing; manager::report_source_exists(null) under strict_types is a PHP TypeError
            # (no errorcode; PHP appends "called in <its file> on line <n>", which depends on the install)
            raise WSError("TypeError", None, "core_reportbuilder\\manager::report_source_exists(): Argument #1 ($source) "
                          "must be of type string, null given")
        report = self.reports.get(reportid)
        if report is None:
            raise missing_record("reportbuilder_report")  # persistent::read(): get_record(..., MUST_EXIST)
        lang = self.fmt.current_language
        if not reports.can_view(report, self.caller, self.site):
            raise WSError("core_reportbuilder\\exception\\report_access_exception", "errorreportview",
                          reports.get_string("errorreportview", lang))
        tz = reports.user_timezone(self.site, self.school.users[self.caller.user_id].timezone, self.settings.timezone)
        ctx = reports.Context(self.school, self.site, lang, tz, self.base_url)
        return {"details": reports.report_details(report, ctx, self.fmt.string(report.name) or ""),
                "data": reports.report_data(report, ctx, page, perpage), "warnings": []}


def _letter(pct: float) -> str:
    for bound, letter in ((93, "A"), (90, "A-"), (87, "B+"), (83, "B"), (80, "B-"), (77, "C+"), (73, "C"),
                          (70, "C-"), (67, "D+"), (60, "D")):
        if pct >= bound:
            return letter
    return "F"
