"""The CommCare case tables hold what the emulated Moodle holds, edge cases included."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator

import phonenumbers
import pytest

from emulators.moodle import MoodleEmulator
from moodle_commcare.demo import OWNER_MAP
from moodle_commcare.transform import run_dbt, run_transform

from .conftest import SMALL, Warehouse, module_warehouse
from .oracle import DEFAULT_OWNER, SITE, VARS, engagement, late, missing, owner_of, plain, ts
from .oracle import cases as oracle_cases


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    with module_warehouse(tmp_path_factory, "marts") as wh:
        wh.extract()
        run_transform(wh.path, VARS)
        yield wh


def cases(wh: Warehouse, table: str) -> Dict[str, Dict[str, Any]]:
    return oracle_cases(wh.path, table)


def test_one_student_case_per_student_with_profile_and_phones(built: Warehouse) -> None:
    s = built.moodle.school
    students = cases(built, "commcare_student_cases")
    want = {uid for _, uid, e in s.all_enrolments() if e.role == "student"}
    assert set(students) == {f"{SITE}-u-{uid}" for uid in want}
    for uid in want:
        u = s.users[uid]
        row = students[f"{SITE}-u-{uid}"]
        assert (row["name"], row["first_name"], row["last_name"], row["email"]) == (
            u.fullname, u.firstname, u.lastname, u.email)
        assert row["phone_raw"] == (u.phone1 or None)
        expected = None
        if u.phone1:
            try:
                n = phonenumbers.parse(u.phone1, u.country or None)
                if phonenumbers.is_valid_number(n):
                    expected = phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)
            except phonenumbers.NumberParseException:
                pass
        assert row["phone_e164"] == expected, (u.phone1, u.country)
        active = sum(1 for cid in s.enrolments if (e := s.enrolments[cid].get(uid)) and e.role == "student" and e.active)
        assert row["active_course_count"] == active
        assert row["close"] == ("yes" if active == 0 or u.suspended else None)
        assert row["last_site_access"] == (ts(u.lastaccess).date() if u.lastaccess else None)  # type: ignore[union-attr]
        assert row["owner_id"]
    assert any(r["phone_raw"] is None for r in students.values()), "users without phones"
    assert any(r["phone_e164"] and not r["phone_raw"].startswith("+") for r in students.values()), "national numbers normalised"
    assert any(not r["name"].isascii() for r in students.values()), "non-ASCII names"


def test_one_enrolment_case_per_student_enrolment(built: Warehouse) -> None:
    s = built.moodle.school
    enrolments = cases(built, "commcare_enrolment_cases")
    pairs = [(cid, uid, e) for cid, uid, e in s.all_enrolments() if e.role == "student"]
    assert set(enrolments) == {f"{SITE}-e-{cid}-{uid}" for cid, uid, _ in pairs}
    for cid, uid, e in pairs:
        row = enrolments[f"{SITE}-e-{cid}-{uid}"]
        course = s.courses[cid]
        assert row["parent_external_id"] == f"{SITE}-u-{uid}" and row["parent_type"] == "student"
        assert row["owner_id"] == owner_of(s, cid)
        assert row["course_shortname"] == course.shortname
        assert row["enrolment_status"] == ("active" if e.active else "suspended")
        assert row["close"] == (None if e.active and not s.users[uid].suspended else "yes")
        assert row["last_course_access"] == (ts(e.lastcourseaccess).date() if e.lastcourseaccess else None)  # type: ignore[union-attr]
        assert row["engagement_status"] == engagement(s, cid, uid), (cid, uid)
        assert row["missing_submissions"] == missing(s, cid, uid)
        assert row["late_submissions"] == late(s, cid, uid)
        if not e.active:
            continue  # Moodle reports grades and completion for active enrolments only
        total = None if s.has_hidden_grade(cid, uid) else s.course_total(cid, uid)[0]
        assert row["final_grade_raw"] == (None if total is None else pytest.approx(total, abs=1e-4))
        graded = sum(1 for i in s.grade_items[cid]
                     if i.itemtype in ("mod", "manual") and not i.hidden and s.grade(i, uid)[0] is not None)
        assert row["graded_items"] == graded
        if course.enablecompletion:
            tracked = [m for m in s.modules[cid] if m.completion]
            done = sum(1 for m in tracked if s.completion(m, uid)[0] in (1, 2))
            assert (row["activities_done"], row["activities_total"]) == (done, len(tracked))
        else:
            assert row["activities_total"] is None


def test_course_without_grade_items_has_no_final_grade(built: Warehouse) -> None:
    s = built.moodle.school
    empty = [cid for cid, items in s.grade_items.items() if [i.itemtype for i in items] == ["course"]]
    assert empty, "the test school has a course with nothing graded but the course total"
    rows = [r for r in cases(built, "commcare_enrolment_cases").values() if r["moodle_course_id"] in empty]
    assert rows and all(r["final_grade_raw"] is None and r["graded_items"] == 0 and r["grade_summary"] is None for r in rows)


def test_grade_summary_lists_items_for_offline_reading(built: Warehouse) -> None:
    """Plain text in one language; gradable items only (no category subtotal, no hidden item); ranges where shown."""
    s = built.moodle.school
    rows = cases(built, "commcare_enrolment_cases")
    checked = set()
    for cid, uid, e in s.all_enrolments():
        if e.role != "student" or not e.active or not e.lastcourseaccess:
            continue
        items = [i for i in s.grade_items[cid] if i.itemtype in ("mod", "manual") and not i.hidden]
        if not items:
            continue
        parts = rows[f"{SITE}-e-{cid}-{uid}"]["grade_summary"].split("; ")
        assert [p.rsplit(": ", 1)[0] for p in parts] == [plain(i.itemname) for i in items]
        for part, item in zip(parts, items, strict=True):
            raw = s.grade(item, uid)[0]
            if s.courses[cid].showrange:
                want = f"{'-' if raw is None else format(round(raw, 2), 'g')}/{format(item.grademax, 'g')}"
            else:  # the course hides ranges: Moodle's formatted grade
                want = "-" if raw is None else f"{raw:.2f}"
            assert part.rsplit(": ", 1)[1] == want
        checked.add((s.courses[cid].showrange, any(i.itemtype == "manual" for i in items),
                     any(i.itemtype == "category" for i in s.grade_items[cid]),
                     any(i.hidden for i in s.grade_items[cid]), "multilang" in str([i.itemname for i in items])))
    assert {c[0] for c in checked} == {True, False}, "courses with and without ranges"
    assert all(any(c[k] for c in checked) for k in range(1, 5)), "manual, category and hidden items, multilang names"


def test_names_are_plain_text_in_one_language(built: Warehouse) -> None:
    s = built.moodle.school
    for row in cases(built, "commcare_enrolment_cases").values():
        course = s.courses[row["moodle_course_id"]]
        assert row["course_fullname"] == plain(course.fullname)
        assert "<" not in row["course_fullname"] and "&amp;" not in row["course_fullname"]
    names = {r["course_fullname"] for r in cases(built, "commcare_enrolment_cases").values()}
    assert any("Swahili" in n and "Kiswahili" not in n for n in names), "a multi-language name, in English"
    assert any("&" in n for n in names), "an ampersand, unescaped"


def test_users_in_several_courses_have_one_student_case_and_many_enrolments(built: Warehouse) -> None:
    s = built.moodle.school
    busiest = max({u for _, u, e in s.all_enrolments() if e.role == "student"},
                  key=lambda u: sum(1 for c in s.enrolments if u in s.enrolments[c]))
    children = [r for r in cases(built, "commcare_enrolment_cases").values() if r["moodle_user_id"] == busiest]
    assert len(children) >= 5
    assert {r["parent_external_id"] for r in children} == {f"{SITE}-u-{busiest}"}


def test_unenrolment_closes_cases_after_the_next_run(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    with MoodleEmulator(spec=SMALL) as moodle:
        wh = Warehouse(moodle, tmp_path / "m.duckdb")
        wh.extract()
        s = moodle.school
        only_one = next(u for u in {u for _, u, e in s.all_enrolments() if e.role == "student"}
                        if sum(1 for c in s.enrolments if u in s.enrolments[c]) == 1
                        and not s.users[u].suspended and all(e.active for c in s.enrolments
                                                             if (e := s.enrolments[c].get(u))))
        cid = next(c for c in s.enrolments if only_one in s.enrolments[c])
        s.unenrol(cid, only_one)
        wh.extract()
        run_transform(wh.path, VARS)
        enrolment = cases(wh, "commcare_enrolment_cases")[f"{SITE}-e-{cid}-{only_one}"]
        student = cases(wh, "commcare_student_cases")[f"{SITE}-u-{only_one}"]
        assert (enrolment["enrolment_status"], enrolment["close"]) == ("unenrolled", "yes")
        assert (student["active_course_count"], student["close"]) == (0, "yes")


def test_cases_without_owner_are_reported_not_exported(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with MoodleEmulator(spec=SMALL) as moodle:
        wh = Warehouse(moodle, tmp_path / "m.duckdb")
        wh.extract()
        # no default owner: only the mapped courses and categories have one
        run_transform(wh.path, {"as_of": VARS["as_of"], "commcare_owner_map": OWNER_MAP})
        s = moodle.school
        unowned = cases(wh, "commcare_unowned_cases")
        enrolments = cases(wh, "commcare_enrolment_cases")
        for cid, uid, e in s.all_enrolments():
            if e.role != "student":
                continue
            key = f"{SITE}-e-{cid}-{uid}"
            if owner_of(s, cid) == DEFAULT_OWNER:
                assert key in unowned and key not in enrolments
        assert all(r["owner_id"] for r in enrolments.values())
        assert all(r["owner_id"] for r in cases(wh, "commcare_student_cases").values())
        assert unowned and all(r["reason"] for r in unowned.values())


def test_docs_generate_and_every_mart_column_is_described(built: Warehouse) -> None:
    result = run_dbt(["docs", "generate"], built.path, VARS)
    assert result.success
    from moodle_commcare.transform import artifacts_dir

    manifest = json.loads((artifacts_dir(built.path) / "target" / "manifest.json").read_text())
    catalog = json.loads((artifacts_dir(built.path) / "target" / "catalog.json").read_text())
    for node_id, node in catalog["nodes"].items():
        if not node_id.startswith("model.moodle_commcare.commcare_"):
            continue
        documented = manifest["nodes"][node_id]["columns"]
        for column in node["columns"]:
            assert documented.get(column.lower(), {}).get("description"), f"{node_id}.{column} has no description"


def test_another_dbt_target_builds_beside_the_marts_not_over_them(built: Warehouse) -> None:
    """An analyst's `dbt build --target dev` lands in dev_* schemas (macros/generate_schema_name.sql): the schemas
    the export reads keep what `moodle-commcare transform` built."""
    import duckdb

    def schemas() -> Dict[str, int]:
        with duckdb.connect(str(built.path), read_only=True) as con:
            return dict(con.execute("select table_schema, count(*) from information_schema.tables group by 1").fetchall())

    before = schemas()
    result = run_dbt(["run", "--target", "dev", "--select", "stg_moodle__courses"], built.path)
    assert result.success, result.output_tail
    after = schemas()
    assert after.pop("dev_moodle_staging") == 1
    assert after == before
