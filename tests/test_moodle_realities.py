"""What a real Moodle does that a naive connector misses (spec section R), one behaviour per test.

Each test sets the emulator up as a real site would be (a setting, a role without one capability, a token past
its date) and checks the connector either loads what the cases need or stops naming what to change: never a
table that silently lacks phones, grades or enrolments.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from emulators.moodle import DEMO_PASSWORD, DEMO_SERVICE, DEMO_USERNAME, MoodleEmulator, SchoolSpec
from emulators.moodle.school import Enrolment
from emulators.moodle.site import SiteConfig
from moodle_commcare import runlog
from moodle_commcare.transform import run_transform
from moodle_commcare.warehouse import Warehouse as MWarehouse
from pipelines.moodle.errors import MoodleDataGapError, MoodleInvalidTokenError

from .conftest import SMALL, Warehouse
from .oracle import VARS, cases


def _stops(wh: Warehouse, *names: str, **options: object) -> MoodleDataGapError:
    with pytest.raises(MoodleDataGapError) as caught:
        wh.extract(**options)
    for name in names:
        assert name in str(caught.value), (name, str(caught.value))
    assert wh.tables() == [], "a stopped run loads nothing"
    return caught.value


# ------------------------------------------------------------------ R5: phones follow "Show user identity"
@pytest.mark.parametrize("version", ["4.1", "4.5"])
def test_phones_hidden_by_the_identity_policy_stop_the_run(version: str, tmp_path: Path) -> None:
    """Moodle's default "Show user identity" is email only: even a Manager gets no phone (user/lib.php)."""
    with MoodleEmulator(spec=SMALL, profile="manager", site=SiteConfig(version=version)) as moodle:
        err = _stops(Warehouse(moodle, tmp_path / "m.duckdb"), "Show user identity", "moodle/site:viewuseridentity",
                     "SOURCES__MOODLE__ALLOW_HIDDEN")
        assert err.code == "phones"


def test_accepted_hidden_phones_are_marked_not_blank(tmp_path: Path) -> None:
    with MoodleEmulator(spec=SMALL, profile="manager", site=SiteConfig()) as moodle:
        wh = Warehouse(moodle, tmp_path / "m.duckdb")
        report = wh.extract(allow_hidden=["phones"])
        assert [w["code"] for w in report.warnings] == ["phones"]
        assert any("phone" in w for w in runlog.latest(MWarehouse.of(wh.path))[0]["summary"]["warnings"]), "the run log says so"
        run_transform(wh.path, VARS)
        students = cases(wh.path, "commcare_student_cases").values()
        assert students and {r["sms_phone_status"] for r in students} == {"hidden_by_moodle"}
        assert all(r["sms_phone"] is None for r in students)


def test_a_site_admin_sees_phones_whatever_the_policy(tmp_path: Path) -> None:
    with MoodleEmulator(spec=SMALL, profile="admin", site=SiteConfig()) as moodle:
        wh = Warehouse(moodle, tmp_path / "m.duckdb")
        assert wh.extract().warnings == []
        assert wh.rows("select count(*) from users where phone1 is not null")[0][0] > 0


# ------------------------------------------------------------------ R6: "Hide user fields" with lastaccess
def test_hidden_last_access_stops_the_run(tmp_path: Path) -> None:
    with MoodleEmulator(spec=SMALL, site=SiteConfig.recommended(hiddenuserfields=("lastaccess",))) as moodle:
        moodle.prohibit("moodle/course:viewhiddenuserfields")
        _stops(Warehouse(moodle, tmp_path / "m.duckdb"), "moodle/course:viewhiddenuserfields", "Hide user fields")


def test_accepted_hidden_last_access_is_unknown_and_never_freezes_the_refresh(tmp_path: Path) -> None:
    with MoodleEmulator(spec=SMALL, site=SiteConfig.recommended(hiddenuserfields=("lastaccess",))) as moodle:
        moodle.prohibit("moodle/course:viewhiddenuserfields")
        wh = Warehouse(moodle, tmp_path / "m.duckdb")
        first = wh.extract(allow_hidden=["last_access"])
        assert wh.rows("select count(*) from enrolments where lastcourseaccess is not null") == [(0,)]
        run_transform(wh.path, VARS)
        enrolments = cases(wh.path, "commcare_enrolment_cases").values()
        assert {r["engagement_status"] for r in enrolments} == {"unknown"}, "hidden is not never"
        assert all(r["last_course_access"] is None for r in enrolments)
        # nothing says a course is unchanged, so every run reads the detail again: a grade change still arrives
        s = moodle.school
        cid = next(c for c in s.courses if s.students_of(c, True) and any(i.itemtype == "mod" for i in s.grade_items[c]))
        uid = s.students_of(cid, True)[0]
        item = next(i for i in s.grade_items[cid] if i.itemtype == "mod")
        s.set_grade(cid, uid, item.id, 1.25)
        again = wh.extract(allow_hidden=["last_access"])
        grade_calls = "gradereport_user_get_grade_items"
        assert again.stats.requests[grade_calls] == first.stats.requests[grade_calls]
        assert wh.rows("select graderaw from grades where course_id=? and user_id=? and grade_item_id=?",
                       cid, uid, item.id) == [(1.25,)]


# ------------------------------------------------------------------ R4: groups
def test_separate_groups_without_accessallgroups_stop_the_run(tmp_path: Path) -> None:
    """enrol/externallib.php: a caller in no group of a separate-groups course gets an empty list, no error."""
    with MoodleEmulator(spec=SMALL) as moodle:
        moodle.prohibit("moodle/site:accessallgroups")
        separate = sorted(c for c, course in moodle.school.courses.items() if course.groupmode == 1)
        err = _stops(Warehouse(moodle, tmp_path / "m.duckdb"), "moodle/site:accessallgroups", "separate groups")
        assert err.code == "enrolments_hidden"
        assert any(f"course {c}," in str(err) for c in separate)


def test_visible_groups_grade_report_of_one_group_stops_the_run(tmp_path: Path) -> None:
    """grade/report/user: without accessallgroups, groupid 0 means the caller's active group: the first one."""
    with MoodleEmulator(spec=SMALL) as moodle:
        moodle.prohibit("moodle/site:accessallgroups")
        visible = sorted(c for c, course in moodle.school.courses.items() if course.groupmode == 2)
        err = _stops(Warehouse(moodle, tmp_path / "m.duckdb"), "moodle/site:accessallgroups",
                     course_ids=visible)
        assert err.code == "grades_hidden"


# ------------------------------------------------------------------ R7: short pages
def test_a_short_page_is_not_the_end(tmp_path: Path) -> None:
    """Users the caller may not see are dropped after the SQL limit: pages come back short mid-list. The run reads
    on to an empty page, and still stops: Moodle's own count shows who was left out."""
    with MoodleEmulator(spec=SMALL) as moodle:
        s = moodle.school
        cid = 2
        # every third student also teaches elsewhere: a course contact, whom every caller sees
        for uid in s.students_of(cid)[::3]:
            s.enrolments[4][uid] = Enrolment(role="editingteacher", active=True)
        moodle.prohibit("moodle/user:viewdetails")
        moodle.keep_log = True
        _stops(Warehouse(moodle, tmp_path / "m.duckdb"), "moodle/user:viewdetails", page_size=3)
        pages = [r for r in moodle.request_log if r["function"] == "core_enrol_get_enrolled_users"
                 and r["params"]["courseid"] == str(cid) and len(r["params"]["options"]) == 3]
        offsets = [int(next(o["value"] for o in r["params"]["options"] if o["name"] == "limitfrom")) for r in pages]
        listed = sorted(s.enrolments[cid])  # Moodle's order: user id
        contacts = {u for _, u, e in s.all_enrolments() if e.role == "editingteacher"}
        last_visible = max(i for i, u in enumerate(listed) if u in contacts)
        first_read = list(range(0, (last_visible // 3 + 2) * 3, 3))  # every page to the last visible user, then one empty
        assert offsets[: len(first_read)] == first_read, "read past every short page to the end"
        assert last_visible // 3 >= 3, "several short pages came before the last visible user"


# ------------------------------------------------------------------ R1, R14: enrolled nowhere; an empty site
def test_assignments_are_asked_for_courses_the_user_is_not_enrolled_in(warehouse: Warehouse) -> None:
    warehouse.moodle.keep_log = True
    warehouse.extract()
    calls = [r for r in warehouse.moodle.request_log if r["function"] == "mod_assign_get_assignments"]
    assert calls and all(r["params"].get("includenotenrolledcourses") == "1" for r in calls)
    assert warehouse.rows("select count(*) from assignments")[0][0] == sum(map(len, warehouse.moodle.school.assignments.values()))


def test_an_empty_site_still_builds_every_table(tmp_path: Path) -> None:
    spec = SchoolSpec(seed=3, courses=3, students=20, assignments=0, grade_items=0, activities=2, completion=False,
                      submissions=False, edge_cases=False)
    with MoodleEmulator(spec=spec) as moodle:
        wh = Warehouse(moodle, tmp_path / "m.duckdb")
        report = wh.extract()
        for table in ("assignments", "assignment_submissions", "assignment_user_flags", "activity_completion"):
            assert report.table_rows[table] == 0, table
        columns = {r[0] for r in wh.rows("select column_name from information_schema.columns "
                                         "where table_schema = 'moodle_raw' and table_name = 'assignment_submissions'")}
        assert {"assignment_id", "userid", "groupid", "status", "timemodified"} <= columns
        run_transform(wh.path, VARS)
        assert cases(wh.path, "commcare_enrolment_cases")


# ------------------------------------------------------------------ R13: tokens past their date
def test_an_expired_token_is_said_to_be_expired(warehouse: Warehouse) -> None:
    """webservice/lib.php: the first use answers accessexception and deletes the token; later ones invalidtoken."""
    warehouse.moodle.expire_token()
    with pytest.raises(MoodleInvalidTokenError, match="expired") as caught:
        warehouse.extract()
    assert "SOURCES__MOODLE__CREDENTIALS__TOKEN" in str(caught.value)
    assert warehouse.moodle.requests["core_webservice_get_site_info"] == 2, "asked once more to tell why"


def test_an_expired_token_is_renewed_with_credentials(warehouse: Warehouse) -> None:
    warehouse.moodle.expire_token()
    report = warehouse.extract(token=None, username=DEMO_USERNAME, password=DEMO_PASSWORD, service=DEMO_SERVICE)
    assert report.table_rows["users"] > 0


@pytest.mark.parametrize("version, exception", [("4.1", "moodle_exception"), ("4.5", "core\\exception\\moodle_exception")])
def test_exception_class_names_follow_the_version(version: str, exception: str, tmp_path: Path) -> None:
    """lib/UPGRADING.md 4.5 (MDL-81919): the class moved to \\core\\exception; the connector reads errorcode only."""
    with MoodleEmulator(spec=SMALL, site=SiteConfig.recommended(version=version)) as moodle:
        moodle.revoke_token()
        with pytest.raises(MoodleInvalidTokenError) as caught:
            Warehouse(moodle, tmp_path / "m.duckdb").extract()
        assert caught.value.exception == exception


# ------------------------------------------------------------------ R10: a student's own due date
def test_overrides_are_read_when_asked_and_move_the_due_date(tmp_path: Path) -> None:
    from .oracle import missing

    with MoodleEmulator(spec=SMALL) as moodle:
        wh = Warehouse(moodle, tmp_path / "m.duckdb")
        report = wh.extract(due_date_overrides=True)
        s = moodle.school
        pairs = sum(len(s.assignments[c]) * len(s.students_of(c, True)) for c in s.courses)
        assert report.stats.requests["mod_assign_get_participant"] == pairs
        run_transform(wh.path, VARS)
        rows = cases(wh.path, "commcare_enrolment_cases")
        moved = [(c, u) for (a_id, u) in s.user_overrides for c, rows_ in s.assignments.items()
                 for a in rows_ if a.id == a_id and u in s.enrolments[c]]
        assert moved
        for cid, uid in moved:
            row = rows[f"moodle-moodle-demo-academy-example-e-{cid}-{uid}"]
            assert row["missing_submissions"] == missing(s, cid, uid, overrides=True)
        assert any(missing(s, c, u, overrides=True) != missing(s, c, u) for c, u in moved), "an override matters"
