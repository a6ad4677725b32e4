"""The whole job per token user and Moodle version: correct case tables, or a stop that says what to change.

A real site's integration user is rarely an admin; what it sees follows its role and the site's settings
(../shared/specs/moodle-web-services.md section R). Each run below goes extract -> transform -> export against
the emulator answering as that user, and the case tables are compared with the school itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional

import pytest

from emulators.commcare import CommCareEmulator
from emulators.moodle import MoodleEmulator
from emulators.moodle.site import SiteConfig
from exports.commcare import run_export
from moodle_commcare.demo import OWNERS
from moodle_commcare.transform import run_transform
from pipelines.moodle.errors import MoodleError

from .conftest import SMALL, Warehouse
from .export_support import assert_store_matches_marts, settings
from .oracle import VARS, cases, compare, enrolment_cases, student_cases

VERSIONS = ["4.1", "4.5"]


def _pipeline(wh: Warehouse, tmp_path: Path, course_ids: Optional[List[int]] = None) -> None:
    wh.extract(**({"course_ids": course_ids} if course_ids else {}))
    run_transform(wh.path, VARS)
    with CommCareEmulator(owners=OWNERS | {"owner-default"}) as hq:
        report = run_export(wh.path, settings(hq, tmp_path), upload=True)
        assert not any(t.failed for t in report.types)
        assert_store_matches_marts(hq, wh.path)


def _visible_students(wh: Warehouse, course_ids: Iterable[int]) -> set:
    """Students a course role can see a profile of: those with an active enrolment in one of its courses."""
    s = wh.moodle.school
    teaching = s.roles_of(s.service_users[wh.moodle.tokens[wh.moodle.token].profile])
    return {uid for cid in teaching for uid, e in s.enrolments[cid].items() if e.active}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("profile", ["admin", "manager", "integration"])
def test_roles_that_can_read_everything_build_correct_cases(profile: str, version: str, tmp_path: Path) -> None:
    with MoodleEmulator(spec=SMALL, profile=profile, site=SiteConfig.recommended(version=version)) as moodle:
        wh = Warehouse(moodle, tmp_path / "m.duckdb")
        _pipeline(wh, tmp_path)
        s = moodle.school
        compare(cases(wh.path, "commcare_enrolment_cases"), enrolment_cases(s, s.courses))
        compare(cases(wh.path, "commcare_student_cases"), student_cases(s, s.courses))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("profile, course_ids, names", [
    # the capture's `wsintegration`: only what lib/db/services.php declares; onlyactive needs more
    ("declared", None, ["moodle/course:enrolreview"]),
    # a teacher's token sees other courses' public description only
    ("teacher", None, ["moodle/course:view", "SOURCES__MOODLE__COURSE_IDS"]),
    # course 5: a non-editing teacher, who may not review enrolments
    ("teacher", [2, 3, 5], ["moodle/course:enrolreview"]),
])
@pytest.mark.parametrize("batched", [False, True], ids=["one_call_per_request", "batched"])
def test_roles_that_cannot_stop_naming_what_to_change(profile: str, course_ids: Optional[List[int]], names: List[str],
                                                      version: str, batched: bool, tmp_path: Path) -> None:
    """Batched, a refusal inside a batch names the same capability as the single call's."""
    with MoodleEmulator(spec=SMALL, profile=profile, site=SiteConfig.recommended(version=version),
                        batch_function=batched) as moodle:
        wh = Warehouse(moodle, tmp_path / "m.duckdb")
        with pytest.raises(MoodleError) as caught:
            wh.extract(**({"course_ids": course_ids} if course_ids else {}))
        for name in names:
            assert name in str(caught.value)
        assert wh.tables() == [], "nothing of a stopped run is loaded"


@pytest.mark.parametrize("version, batched", [("4.1", False), ("4.5", False), ("4.5", True)])
def test_teacher_token_builds_the_cases_of_its_own_courses(version: str, batched: bool, tmp_path: Path) -> None:
    """An editing teacher in courses 2 and 3 (separate groups, but editing teachers access all groups)."""
    with MoodleEmulator(spec=SMALL, profile="teacher", site=SiteConfig.recommended(version=version),
                        batch_function=batched) as moodle:
        wh = Warehouse(moodle, tmp_path / "m.duckdb")
        _pipeline(wh, tmp_path, course_ids=[2, 3])
        s = moodle.school
        seen = _visible_students(wh, [2, 3])
        # a student whose only enrolment here is suspended has no profile a teacher may read: never made a case
        want_enrolments = {k: v for k, v in enrolment_cases(s, [2, 3]).items() if int(k.rsplit("-", 1)[1]) in seen}
        want_students = {k: v for k, v in student_cases(s, [2, 3]).items() if int(k.rsplit("-", 1)[1]) in seen}
        assert len(want_students) < len(student_cases(s, [2, 3])), "the school has such a student"
        compare(cases(wh.path, "commcare_enrolment_cases"), want_enrolments)
        compare(cases(wh.path, "commcare_student_cases"), want_students)
        gaps = {r[0] for r in wh.rows("select code from access_gaps")}
        assert {"inactive_profiles_hidden", "usernames_hidden"} <= gaps, "what it could not read is recorded"


def test_the_readme_role_is_the_role_the_emulator_tests() -> None:
    """The capabilities the README tells admins to grant are exactly those of the `integration` profile."""
    import re

    from emulators.moodle.access import README_ROLE

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### The Moodle role", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    granted = {cap for line in rows for cap in re.findall(r"`([a-z]+/[a-z_]+:[a-z_]+)`", line.split("|")[1])}
    assert granted - {"moodle/webservice:createtoken"} == set(README_ROLE)
