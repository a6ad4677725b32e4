"""What goes over the wire: batched profiles, POST bodies, PHP arrays, paging and request counts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulators.moodle import MoodleEmulator, SchoolSpec
from emulators.moodle.server import MAX_INPUT_VARS, parse_php_params
from pipelines.moodle.params import encode_params, options_list

from .conftest import Warehouse


def test_profiles_are_fetched_in_batches_never_one_call_per_user(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with MoodleEmulator(spec=SchoolSpec(seed=3, courses=4, students=450, enrolments_per_student=1.2)) as moodle:
        wh = Warehouse(moodle, tmp_path / "m.duckdb")
        moodle.keep_log = True
        report = wh.extract(user_batch_size=200)
        users = len({uid for _, uid, _ in moodle.school.all_enrolments()})
        assert report.table_rows["users"] == users > 400
        batches = -(-users // 200)
        assert moodle.requests["core_user_get_users_by_field"] == batches == 3
        assert all(r["vars"] < MAX_INPUT_VARS for r in moodle.request_log), "every request fits max_input_vars"


def test_enrolled_users_are_paged_and_every_page_arrives(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with MoodleEmulator(spec=SchoolSpec(seed=5, courses=2, students=130, enrolments_per_student=1.0)) as moodle:
        wh = Warehouse(moodle, tmp_path / "m.duckdb")
        report = wh.extract(page_size=25)
        sizes = [len(rows) for rows in moodle.school.enrolments.values()]
        # per course: pages of the full list, then of the active-only list, each until an empty page
        active = [sum(1 for e in rows.values() if e.active) for rows in moodle.school.enrolments.values()]
        want = sum(-(-n // 25) + 1 for n in sizes) + sum(-(-n // 25) + 1 for n in active)
        assert moodle.requests["core_enrol_get_enrolled_users"] == want
        assert report.table_rows["enrolments"] == sum(sizes)


def test_token_travels_in_post_bodies_only(warehouse: Warehouse) -> None:
    warehouse.moodle.keep_log = True
    warehouse.extract()
    log = warehouse.moodle.request_log
    assert log and all(r["method"] == "POST" for r in log)
    assert all(warehouse.moodle.token not in r["query"] for r in log)
    assert all(r["query"].startswith("wsfunction=") for r in log), "function name kept in the URL for server logs"


def test_course_selection_limits_every_call(warehouse: Warehouse) -> None:
    chosen = sorted(warehouse.moodle.school.courses)[:2]
    report = warehouse.extract(course_ids=chosen)
    assert [r[0] for r in warehouse.rows("select id from courses order by id")] == chosen
    assert {r[0] for r in warehouse.rows("select distinct course_id from enrolments")} == set(chosen)
    assert report.stats.requests["gradereport_user_get_grade_items"] <= 2


def test_category_selection_includes_sub_categories(warehouse: Warehouse) -> None:
    school = warehouse.moodle.school
    parent = next(c.id for c in school.categories.values() if any(o.parent == c.id for o in school.categories.values()))
    family = {parent} | {c.id for c in school.categories.values() if c.parent == parent}
    warehouse.extract(category_ids=[parent])
    got = {r[0] for r in warehouse.rows("select id from courses")}
    assert got == {c.id for c in school.courses.values() if c.categoryid in family}
    assert got


def test_php_array_encoding_shapes() -> None:
    assert encode_params({"values": [5, 7]}) == [("values[0]", "5"), ("values[1]", "7")]
    assert encode_params({"options": {"ids": [3]}}) == [("options[ids][0]", "3")]
    assert encode_params({"courseid": 4, "options": options_list(onlyactive=1, limitfrom=0)}) == [
        ("courseid", "4"), ("options[0][name]", "onlyactive"), ("options[0][value]", "1"),
        ("options[1][name]", "limitfrom"), ("options[1][value]", "0")]
    assert encode_params({"flag": True, "skip": None}) == [("flag", "1")]


_keys = st.text(alphabet=st.characters(blacklist_characters="[]&=", blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8)
_scalars = st.one_of(st.integers(), st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12))
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(st.lists(children, min_size=1, max_size=4),
                               st.dictionaries(_keys.filter(lambda k: not k.isdigit()), children, min_size=1, max_size=3)),
    max_leaves=12,
)


def _as_strings(value):  # type: ignore[no-untyped-def]
    if isinstance(value, list):
        return [_as_strings(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_strings(v) for k, v in value.items()}
    return str(value)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys.filter(lambda k: not k.isdigit()), _values, min_size=1, max_size=4))
def test_encoding_round_trips_through_a_php_style_parser(params) -> None:  # type: ignore[no-untyped-def]
    from urllib.parse import parse_qsl, urlencode

    wire = urlencode(encode_params(params))
    assert parse_php_params(parse_qsl(wire, keep_blank_values=True)) == _as_strings(params)


def test_warnings_are_logged_and_data_kept(moodle: MoodleEmulator, caplog) -> None:  # type: ignore[no-untyped-def]
    from pipelines.moodle.client import MoodleClient
    from pipelines.moodle.config import MoodleSettings

    config = MoodleSettings.build(moodle.base_url, token=moodle.token, allow_insecure_http=True)
    with caplog.at_level("INFO", logger="moodle_commcare.moodle"):
        answer = MoodleClient(config).call("mod_assign_get_assignments",
                                           {"courseids": [2, 99999], "includenotenrolledcourses": 1})
    assert [c["id"] for c in answer["courses"]] == [2]
    assert any("99999" in r.getMessage() and "mod_assign_get_assignments" in r.getMessage() for r in caplog.records)


def test_token_never_reaches_logs(warehouse: Warehouse, caplog) -> None:  # type: ignore[no-untyped-def]
    warehouse.moodle.inject("http500", function="core_course_get_courses_by_field", times=1)
    warehouse.moodle.inject("invalidtoken", function="core_course_get_contents", times=1)
    from pipelines.moodle.errors import MoodleInvalidTokenError

    with caplog.at_level("DEBUG"), pytest.raises(MoodleInvalidTokenError) as caught:
        warehouse.extract()
    assert warehouse.moodle.token not in str(caught.value)
    assert caplog.records, "the run logged something"
    assert all(warehouse.moodle.token not in r.getMessage() for r in caplog.records)
