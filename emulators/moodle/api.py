"""Web-service functions of the emulator, answering in Moodle's shapes.

Shapes follow ../shared/specs/moodle-web-services.md: optional fields are left out (not null) when empty,
times are Unix seconds, booleans of enrol/course functions are 0/1 ints where Moodle's PARAM_INT says so,
and errors are `{"exception", "errorcode", "message"}` bodies, which the server sends with HTTP 200.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from .school import ROLE_IDS, School, User


class WSError(Exception):
    """An error Moodle reports as an `exception` body."""

    def __init__(self, exception: str, errorcode: str, message: str, debuginfo: Optional[str] = None) -> None:
        super().__init__(message)
        self.body: Dict[str, Any] = {"exception": exception, "errorcode": errorcode, "message": message}
        if debuginfo is not None:
            self.body["debuginfo"] = debuginfo


def invalid_parameter(detail: str) -> WSError:
    return WSError("invalid_parameter_exception", "invalidparameter", "Invalid parameter value detected", detail)


def missing_record(table: str) -> WSError:
    return WSError("dml_missing_record_exception", "invalidrecord", f"Can't find data record in database table {table}.")


def _int(params: Dict[str, Any], name: str, default: Optional[int] = None) -> int:
    value = params.get(name, default)
    if value is None:
        raise invalid_parameter(f"{name} => Invalid parameter value detected (Missing required key in single structure: {name})")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid_parameter(f"{name} => Invalid parameter value detected (Invalid external api parameter: the value is \"{value}\", the server was expecting \"int\" type)") from None


def _list(value: Any) -> List[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    raise invalid_parameter("Only arrays accepted.")


def _options(params: Dict[str, Any]) -> Dict[str, str]:
    return {str(o.get("name")): str(o.get("value")) for o in _list(params.get("options")) if isinstance(o, dict)}


def _put(target: Dict[str, Any], **fields: Any) -> None:
    """Set the optional fields that have a value, as Moodle's user_get_user_details does."""
    for name, value in fields.items():
        if value not in (None, ""):
            target[name] = value


def _user_details(user: User, fields: Optional[set] = None) -> Dict[str, Any]:
    detail: Dict[str, Any] = {"id": user.id, "username": user.username, "firstname": user.firstname,
                              "lastname": user.lastname, "fullname": user.fullname}
    _put(detail, email=user.email, address=user.address, phone1=user.phone1, phone2=user.phone2,
         department=user.department, institution=user.institution, idnumber=user.idnumber, city=user.city,
         country=user.country, description=user.description or None)
    detail.update(firstaccess=user.firstaccess, lastaccess=user.lastaccess, auth=user.auth,
                  suspended=bool(user.suspended), confirmed=bool(user.confirmed), lang=user.lang,
                  theme="", timezone=user.timezone, mailformat=1, descriptionformat=1,
                  profileimageurlsmall="https://moodle.example.org/theme/image.php/boost/core/1/u/f2",
                  profileimageurl="https://moodle.example.org/theme/image.php/boost/core/1/u/f1")
    if user.customfields:
        detail["customfields"] = [dict(f) for f in user.customfields]
    if fields is not None:
        detail = {k: v for k, v in detail.items() if k in fields or k == "id"}
    return detail


class MoodleAPI:
    def __init__(self, school: School) -> None:
        self.school = school
        self.functions: Dict[str, Callable[[Dict[str, Any]], Any]] = {
            "core_webservice_get_site_info": self.site_info,
            "core_course_get_categories": self.categories,
            "core_course_get_courses": self.courses,
            "core_enrol_get_enrolled_users": self.enrolled_users,
            "core_user_get_users_by_field": self.users_by_field,
            "gradereport_user_get_grade_items": self.grade_items,
            "core_enrol_get_users_courses": self.users_courses,
            "core_completion_get_activities_completion_status": self.activities_completion,
            "core_course_get_contents": self.contents,
            "mod_assign_get_assignments": self.assignments,
            "mod_assign_get_submissions": self.submissions,
        }
        self.service_functions = set(self.functions)
        self.token_userid = 2
        # $CFG->wwwroot: what site info reports, whatever address the emulator listens on
        self.base_url = "https://moodle.demo-academy.example"

    def call(self, function: str, params: Dict[str, Any]) -> Any:
        if function not in self.functions:
            raise missing_record("external_functions")
        if function not in self.service_functions:
            raise WSError("webservice_access_exception", "accessexception", "Access control exception")
        with self.school.lock:
            return self.functions[function](params)

    # ------------------------------------------------------------------ functions
    def site_info(self, params: Dict[str, Any]) -> Dict[str, Any]:
        s = self.school
        admin = s.users[self.token_userid]
        return {
            "sitename": s.sitename, "username": admin.username, "firstname": admin.firstname,
            "lastname": admin.lastname, "fullname": admin.fullname, "lang": "en", "userid": admin.id,
            "siteurl": self.base_url, "userpictureurl": f"{self.base_url}/theme/image.php/boost/core/1/u/f1",
            "functions": [{"name": name, "version": str(s.version)} for name in sorted(self.service_functions)],
            "downloadfiles": 1, "uploadfiles": 1, "release": s.release, "version": str(s.version),
            "mobilecssurl": "", "advancedfeatures": [{"name": "usecomments", "value": 1}],
            "usercanmanageownfiles": True, "userquota": 0, "usermaxuploadfilesize": 0, "userhomepage": 1,
            "userprivateaccesskey": "", "siteid": 1, "sitecalendartype": "gregorian", "usercalendartype": "gregorian",
            "userissiteadmin": True, "theme": "boost", "limitconcurrentlogins": 0,
        }

    def categories(self, params: Dict[str, Any]) -> List[Dict[str, Any]]:
        criteria = {c.get("key"): c.get("value") for c in _list(params.get("criteria")) if isinstance(c, dict)}
        out = []
        for c in self.school.categories.values():
            if "id" in criteria and str(c.id) != str(criteria["id"]):
                continue
            coursecount = sum(1 for course in self.school.courses.values() if course.categoryid == c.id)
            out.append({"id": c.id, "name": c.name, "idnumber": c.idnumber, "description": c.description,
                        "descriptionformat": 1, "parent": c.parent, "sortorder": c.id * 10000,
                        "coursecount": coursecount, "visible": c.visible, "visibleold": c.visible,
                        "timemodified": c.timemodified, "depth": c.depth, "path": c.path, "theme": ""})
        return out

    def _course_dict(self, c: Any) -> Dict[str, Any]:
        return {"id": c.id, "shortname": c.shortname, "categoryid": c.categoryid, "categorysortorder": 10000,
                "fullname": c.fullname, "displayname": c.fullname, "idnumber": c.idnumber, "summary": c.summary,
                "summaryformat": 1, "format": c.format, "showgrades": 1, "newsitems": 5, "startdate": c.startdate,
                "enddate": c.enddate, "numsections": self.school.spec.sections, "maxbytes": 0, "showreports": 0,
                "visible": c.visible, "groupmode": 0, "groupmodeforce": 0, "defaultgroupingid": 0,
                "timecreated": c.timecreated, "timemodified": c.timemodified, "enablecompletion": c.enablecompletion,
                "completionnotify": 0, "lang": c.lang, "forcetheme": "", "courseformatoptions": []}

    def courses(self, params: Dict[str, Any]) -> List[Dict[str, Any]]:
        ids = [int(i) for i in _list((params.get("options") or {}).get("ids"))]
        site = {"id": 1, "shortname": "demo", "categoryid": 0, "fullname": self.school.sitename,
                "displayname": self.school.sitename, "summary": "", "summaryformat": 1, "format": "site",
                "startdate": 0, "enddate": 0, "visible": 1, "showgrades": 1, "newsitems": 3,
                "timecreated": 1_600_000_000, "timemodified": 1_600_000_000, "enablecompletion": 0,
                "completionnotify": 0, "lang": "", "forcetheme": "", "numsections": 1, "maxbytes": 0,
                "showreports": 0, "groupmode": 0, "groupmodeforce": 0, "defaultgroupingid": 0}
        out = [] if ids and 1 not in ids else [site]
        for cid, c in sorted(self.school.courses.items()):
            if not ids or cid in ids:
                out.append(self._course_dict(c))
        return out

    def _course(self, params: Dict[str, Any]) -> Any:
        course_id = _int(params, "courseid")
        course = self.school.courses.get(course_id)
        if course is None:
            raise missing_record("course")
        return course

    def enrolled_users(self, params: Dict[str, Any]) -> List[Dict[str, Any]]:
        course = self._course(params)
        options = _options(params)
        fields = {f.strip() for f in options["userfields"].split(",")} if options.get("userfields") else None
        only_active = options.get("onlyactive") in ("1", "true")
        start = int(options.get("limitfrom", 0) or 0)
        limit = int(options.get("limitnumber", 0) or 0)
        rows = sorted(self.school.enrolments[course.id].items())  # Moodle orders by user id by default
        rows = [(uid, e) for uid, e in rows if e.active or not only_active]
        rows = rows[start: start + limit] if limit else rows[start:]
        out = []
        for uid, e in rows:
            user = self.school.users[uid]
            d = _user_details(user)
            d["lastcourseaccess"] = e.lastcourseaccess
            d["roles"] = [{"roleid": ROLE_IDS[e.role], "name": "", "shortname": e.role, "sortorder": 0}]
            d["groups"] = []
            d["preferences"] = [{"name": "auth_forcepasswordchange", "value": "0"}]
            d["enrolledcourses"] = [
                {"id": cid, "fullname": self.school.courses[cid].fullname, "shortname": self.school.courses[cid].shortname}
                for cid in sorted(self.school.courses) if uid in self.school.enrolments[cid]
            ] if fields is None or "enrolledcourses" in fields else []
            if fields is not None:
                d = {k: v for k, v in d.items() if k in fields or k == "id"}
            out.append(d)
        return out

    def users_by_field(self, params: Dict[str, Any]) -> List[Dict[str, Any]]:
        field = params.get("field")
        if field not in ("id", "idnumber", "username", "email"):
            raise invalid_parameter("field => Invalid parameter value detected")
        values = {str(v) for v in _list(params.get("values"))}
        out = []
        for user in self.school.users.values():  # values that match nothing are silently left out
            if str(getattr(user, field)) in values:
                out.append(_user_details(user))
        return out

    def grade_items(self, params: Dict[str, Any]) -> Dict[str, Any]:
        course = self._course(params)
        userid = _int(params, "userid", 0)
        s = self.school
        if userid:
            e = s.enrolments[course.id].get(userid)
            if e is None or not e.active:
                raise WSError("moodle_exception", "invaliduser", "Invalid user")
            user_ids = [userid]
        else:  # every graded (active) user of the course
            user_ids = sorted(uid for uid, e in s.enrolments[course.id].items() if e.role == "student" and e.active)
        items = s.grade_items[course.id]
        usergrades = []
        for uid in user_ids if items else []:
            user = s.users[uid]
            gradeitems = []
            for item in items:
                raw, when = s.course_total(course.id, uid) if item.itemtype == "course" else s.grade(item, uid)
                pct = None if raw is None else (raw - item.grademin) / (item.grademax - item.grademin) * 100
                gi: Dict[str, Any] = {
                    "id": item.id, "itemname": item.itemname, "itemtype": item.itemtype,
                    "itemmodule": item.itemmodule, "iteminstance": item.iteminstance, "itemnumber": 0,
                    "idnumber": "", "categoryid": None if item.itemtype != "course" else None,
                    "outcomeid": None, "scaleid": None, "locked": False, "cmid": item.cmid,
                    "weightraw": 0, "weightformatted": "-", "status": "",
                    "graderaw": raw, "gradedatesubmitted": when, "gradedategraded": when,
                    "gradehiddenbydate": False, "gradeneedsupdate": False, "gradeishidden": False,
                    "gradeislocked": False, "gradeisoverridden": False,
                    "gradeformatted": "-" if raw is None else f"{raw:.2f}",
                    "grademin": item.grademin, "grademax": item.grademax,
                    "rangeformatted": f"{item.grademin:.2f}&ndash;{item.grademax:.2f}",
                    "percentageformatted": "-" if pct is None else f"{pct:.2f} %",
                    "lettergradeformatted": "-" if pct is None else _letter(pct),
                    "feedback": "", "feedbackformat": 0,
                }
                if item.cmid is None:
                    del gi["cmid"]
                gradeitems.append(gi)
            usergrades.append({"courseid": course.id, "courseidnumber": course.idnumber, "userid": uid,
                               "userfullname": user.fullname, "useridnumber": user.idnumber, "maxdepth": 2,
                               "gradeitems": gradeitems})
        return {"usergrades": usergrades, "warnings": []}

    def users_courses(self, params: Dict[str, Any]) -> List[Dict[str, Any]]:
        userid = _int(params, "userid")
        s = self.school
        if userid not in s.users:
            raise missing_record("user")
        with_count = str(params.get("returnusercount", "1")) not in ("0", "false", "")
        out = []
        for cid, course in sorted(s.courses.items()):
            e = s.enrolments[cid].get(userid)
            if e is None or not e.active:  # active enrolments only
                continue
            tracked = [m for m in s.modules[cid] if m.completion]
            done = sum(1 for m in tracked if s.completion(m, userid)[0] in (1, 2))
            progress = (done / len(tracked) * 100.0) if course.enablecompletion and tracked else None
            d = {"id": cid, "shortname": course.shortname, "fullname": course.fullname,
                 "displayname": course.fullname, "idnumber": course.idnumber, "visible": course.visible,
                 "summary": course.summary, "summaryformat": 1, "format": course.format, "showgrades": True,
                 "lang": course.lang, "enablecompletion": bool(course.enablecompletion),
                 "completionhascriteria": False, "completionusertracked": bool(course.enablecompletion),
                 "category": course.categoryid, "progress": progress,
                 "completed": bool(progress is not None and progress >= 100.0), "startdate": course.startdate,
                 "enddate": course.enddate, "marker": 0, "isfavourite": False, "hidden": False,
                 "overviewfiles": [], "showactivitydates": True, "showcompletionconditions": True,
                 "timemodified": course.timemodified}
            if e.lastcourseaccess:
                d["lastaccess"] = e.lastcourseaccess
            if with_count:
                d["enrolledusercount"] = len(s.enrolments[cid])
            out.append(d)
        return out

    def activities_completion(self, params: Dict[str, Any]) -> Dict[str, Any]:
        course = self._course(params)
        userid = _int(params, "userid")
        s = self.school
        if userid not in s.enrolments[course.id]:
            raise WSError("moodle_exception", "invaliduser", "Invalid user")
        statuses = []
        if course.enablecompletion:
            for m in s.modules[course.id]:
                if not m.completion:
                    continue
                state, when = s.completion(m, userid)
                statuses.append({"cmid": m.cmid, "modname": m.modname, "instance": m.instance, "state": state,
                                 "timecompleted": when, "tracking": m.completion, "overrideby": None,
                                 "valueused": False, "hascompletion": True, "isautomatic": m.completion == 2,
                                 "istrackeduser": True, "uservisible": bool(m.visible), "details": []})
        return {"statuses": statuses, "warnings": []}

    def contents(self, params: Dict[str, Any]) -> List[Dict[str, Any]]:
        course = self._course(params)
        s = self.school
        out = []
        for section_id, number, name in s.sections[course.id]:
            modules = []
            for m in s.modules[course.id]:
                if m.section != number:
                    continue
                md: Dict[str, Any] = {
                    "id": m.cmid, "url": f"{self.base_url}/mod/{m.modname}/view.php?id={m.cmid}", "name": m.name,
                    "instance": m.instance, "contextid": 5000 + m.cmid, "visible": m.visible, "uservisible": True,
                    "visibleoncoursepage": 1, "modicon": f"{self.base_url}/theme/image.php/boost/{m.modname}/1/monologo",
                    "modname": m.modname, "modplural": m.modname + "s", "indent": 0, "onclick": "", "afterlink": None,
                    "customdata": "\"\"", "noviewlink": False, "completion": m.completion, "downloadcontent": 1,
                    "dates": [],
                }
                modules.append(md)
            out.append({"id": section_id, "name": name, "visible": 1, "summary": "", "summaryformat": 1,
                        "section": number, "hiddenbynumsections": 0, "uservisible": True, "modules": modules})
        return out

    def assignments(self, params: Dict[str, Any]) -> Dict[str, Any]:
        s = self.school
        ids = [int(i) for i in _list(params.get("courseids"))] or sorted(s.courses)
        courses, warnings = [], []
        for cid in ids:
            if cid not in s.courses:
                warnings.append({"item": "course", "itemid": cid, "warningcode": "1",
                                 "message": "No access rights in course context"})
                continue
            c = s.courses[cid]
            courses.append({"id": cid, "fullname": c.fullname, "shortname": c.shortname, "timemodified": c.timemodified,
                            "assignments": [{
                                "id": a.id, "cmid": a.cmid, "course": cid, "name": a.name, "nosubmissions": 0,
                                "submissiondrafts": 0, "sendnotifications": 0, "sendlatenotifications": 0,
                                "sendstudentnotifications": 1, "duedate": a.duedate,
                                "allowsubmissionsfromdate": a.allowsubmissionsfromdate, "grade": 100,
                                "timemodified": a.timemodified, "completionsubmit": 1, "cutoffdate": a.cutoffdate,
                                "gradingduedate": a.duedate + 7 * 86400, "teamsubmission": 0,
                                "requireallteammemberssubmit": 0, "teamsubmissiongroupingid": 0, "blindmarking": 0,
                                "hidegrader": 0, "revealidentities": 0, "attemptreopenmethod": "untilpass",
                                "maxattempts": -1, "markingworkflow": 0, "markingallocation": 0,
                                "requiresubmissionstatement": 0, "preventsubmissionnotingroup": 0,
                                "configs": [], "intro": "", "introformat": 1, "introfiles": [], "introattachments": [],
                            } for a in s.assignments[cid]]})
        return {"courses": courses, "warnings": warnings}

    def submissions(self, params: Dict[str, Any]) -> Dict[str, Any]:
        s = self.school
        ids = [int(i) for i in _list(params.get("assignmentids"))]
        since = int(params.get("since", 0) or 0)
        by_id = {a.id: a for rows in s.assignments.values() for a in rows}
        out, warnings = [], []
        for aid in ids:
            a = by_id.get(aid)
            if a is None:
                warnings.append({"item": "assignment", "itemid": aid, "warningcode": "3",
                                 "message": "No submissions found"})
                continue
            subs = []
            for uid in s.students_of(a.course_id):
                got = s.submission(a, uid)
                if got is None or got[1] < since:
                    continue
                status, when = got
                subs.append({"id": a.id * 100_000 + uid, "userid": uid, "attemptnumber": 0,
                             "timecreated": min(when, a.allowsubmissionsfromdate + 86400), "timemodified": when,
                             "timestarted": None, "status": status, "groupid": 0, "assignment": a.id, "latest": 1,
                             "plugins": [], "gradingstatus": "notgraded"})
            out.append({"assignmentid": a.id, "submissions": subs})
        return {"assignments": out, "warnings": warnings}


def _letter(pct: float) -> str:
    for bound, letter in ((93, "A"), (90, "A-"), (87, "B+"), (83, "B"), (80, "B-"), (77, "C+"), (73, "C"),
                          (70, "C-"), (67, "D+"), (60, "D")):
        if pct >= bound:
            return letter
    return "F"
