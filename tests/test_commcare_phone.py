"""What a mobile worker's phone receives from the CommCare emulator (issue 16: students get their own course data),
and the importer's parent/extension columns that build those case graphs.

Every expectation is CommCare HQ's (dimagi/commcare-hq): the restore's case set follows
casexml/apps/phone/data_providers/case/livequery.py (`get_live_case_ids_and_indices`), its owner ids
users/models.py `CommCareUser.get_owner_ids`, the parent columns case_importer/do_import.py `_get_parent_index`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

import pytest
import requests

from emulators.commcare import CommCareEmulator
from emulators.commcare.store import CaseStore
from exports.commcare.client import CommCareClient, JobResult
from exports.commcare.config import CommCareSettings
from exports.commcare.xlsx import write_workbook

# ---------------------------------------------------------------------------------------------------- case graphs
# (name, owned, closed, child indices "sub>parent", extension indices "ext>host", outcome)
Graph = Tuple[str, str, str, str, str, str]

# livequery.py's module docstring, "Example case graphs with outcomes", one row each
DOCSTRING_GRAPHS: List[Graph] = [
    # a <--ext-- d(owned), a <--ext-- b  >> a b d
    ("host pulled by owned extension", "d", "", "", "d>a b>a", "a b d"),
    # e(owned) --ext--> a(closed), e --ext--> b  >> a b e
    ("extension with a closed and an open host", "e", "a", "", "e>a e>b", "a b e"),
    # b(closed) <--chi-- a(owned), b <--ext-- c  >> a b c
    ("closed parent and its open extension", "a", "b", "a>b", "c>b", "a b c"),
    # a(closed) <--ext-- d(owned)  >> []
    ("owned extension of a closed host", "d", "a", "", "d>a", ""),
    # a <--ext-- b <--ext-- c(owned)  >> a b c
    ("extension chain", "c", "", "", "b>a c>b", "a b c"),
    # a(closed) <--ext-- b <--ext-- c(owned)  >> []
    ("extension chain on a closed root", "c", "a", "", "b>a c>b", ""),
    # a(closed) <--ext-- b <--ext-- c(owned) <--chi-- d  >> []
    ("extension chain on a closed root, with a child", "c", "a", "d>c", "b>a c>b", ""),
    # a(closed) <--ext-- b <--chi-- c(owned)  >> [] in the docstring, but HQ's code sends a b c: c is owned and not
    # an extension (live), its parent b is enlivened, and b's outgoing extension index enlivens a. HQ's own test
    # data agrees with the code: case_relationship_tests.json "open_child_of_closed_extension" (b closed as
    # well) expects a b c. The emulator follows the code.
    ("owned child of an extension of a closed host", "c", "a", "c>b", "b>a", "a b c"),
]

# casexml/apps/phone/tests/data/case_relationship_tests.json (run by tests/test_extension_indexes.py
# IndexTreeTest): every case there, except the one HQ skips ("parent_of_host_of_owned_extension_with_other_host")
HQ_TEST_GRAPHS: List[Graph] = [
    ("Ownership_Purge", "", "", "", "", ""),  # cases a b c, none owned
    ("Partial_Ownership", "a b c", "", "", "", "a b c"),  # plus an unowned d
    ("Subcase_Ownership", "d", "", "d>b", "", "d b"),
    ("Close_Purge", "", "a", "", "", ""),
    ("Live_Dependence", "a b", "a", "b>a", "", "a b"),
    ("Test_Reverse_Index", "a b", "b", "b>a", "", "a"),
    ("Multiple_Dead", "a b", "a b", "b>a", "", ""),
    ("Alternating_Chain", "b d", "b e", "d>b e>d", "", "d b"),
    ("Lopsided_Chain", "b d e", "d e", "d>b e>d", "", "b"),
    ("Extension_retention", "a", "", "", "e>a", "a e"),
    ("Extension_Purge", "a", "a", "", "e>a", ""),
    ("Extension_Subcase_Chain", "a b", "a", "b>e", "e>a", "a b e"),
    ("Extension_Subcase_Chain_Closed", "a b", "a b", "b>e", "e>a", ""),
    ("Heterogeneous_Children", "a b e", "a", "b>a", "e>a", "a b e"),
    ("Heterogeneous_Parentage", "a b", "a", "e>b", "e>a", "b"),
    ("Delegate_Pull", "d", "", "", "d>a", "d a"),
    ("Delegate_Keep", "a", "", "", "d>a", "d a"),
    ("Delegate_Extension_Info", "d", "", "", "d>a b>a", "d a b"),
    ("Long_chain", "a", "", "", "b>a c>b d>c", "a b c d"),
    ("Long_Chain_with_Children", "e", "", "e>c", "d>c c>b b>a", "a b c d e"),
    ("Closed_Extension", "a", "b", "", "b>a", "a"),
    ("Closed_Extension_With_Children", "a", "b", "a>b", "c>b", "a b c"),
    ("Double_Chain", "a b c", "a b", "c>b b>a", "", "a b c"),
    ("Double_Index", "a b", "a", "b>a", "b>a", "a b"),
    ("Extension_Two_Hosts", "e", "a", "", "e>a e>b", "a b e"),
    ("Double_Extension", "a b", "a", "", "e>a b>e", ""),
    ("Delegate_Closure", "d", "a", "", "d>a", ""),
    ("chain_with_owned_closed", "b", "b", "", "d>c c>b b>a", ""),
    ("owned_closed", "b", "a b c d", "", "d>c c>b b>a", ""),
    ("owned_closed_host", "b", "a", "", "d>c c>b b>a", ""),
    ("Broken_Extension_Chain", "a", "b", "", "b>a c>b", "a"),
    ("Cousins", "a b", "", "a>c b>d c>e d>e", "", "a b c d e"),
    ("icds_structure_closed_person", "a b c", "b", "b>a", "c>b d>b b>a", "a"),
    ("open_extension_of_closed_extension", "c", "a b", "", "b>a c>b", ""),
    ("open_child_of_closed_extension", "c", "a b", "c>b", "b>a", "a b c"),
    ("host_of_closed_extension", "a c", "b", "", "b>a b>d c>b", "a"),
    ("host_of_open_extension_with_closed_extension", "a c", "b", "", "b>a b>d c>b d>e", "a"),
    ("closed_parent_double_index", "d", "a", "b>a", "b>a c>b d>b", "a b c d"),
    ("unowned_child_with_closed_extension_chain", "a e", "d", "a>b c>b", "d>c e>d", "a b"),
    ("reach_tests_subcase", "claim", "p_mother", "p_child>p_mother",
     "claim>house p_mother>house p_child>house child_health>p_child measurement>child_health",
     "claim house p_mother p_child child_health measurement"),
    ("reach_tests_extension", "claim", "p_mother", "",
     "claim>house p_mother>house p_child>house p_child>p_mother child_health>p_child measurement>child_health",
     "claim house p_mother p_child child_health measurement"),
    ("reach_tests_subcase_both_closed", "claim", "p_mother p_child", "p_child>p_mother",
     "claim>house p_mother>house p_child>house child_health>p_child measurement>child_health", "claim house"),
    ("reach_tests_extension_both_closed", "claim", "p_mother p_child", "",
     "claim>house p_mother>house p_child>house p_child>p_mother child_health>p_child measurement>child_health",
     "claim house"),
    ("alternating_propogation", "L", "", "", "L>B C>B C>D E>D", "L B C D E"),
]


def build(graph: Graph) -> Tuple[CaseStore, Dict[str, str]]:
    """The graph's cases, as IndexTreeTest.build_case_structures makes them: owned ones owned by the user
    ("me"), the others by someone else; indices child_<i> and extension_<i>. Returns the store and name -> id."""
    _, owned, closed, subcases, extensions, outcome = graph
    pairs = [(p.split(">"), "child", f"child_{i}") for i, p in enumerate(subcases.split())]
    pairs += [(p.split(">"), "extension", f"extension_{i}") for i, p in enumerate(extensions.split())]
    names = set(owned.split()) | set(closed.split()) | set(outcome.split()) | {n for (pair, _, _) in pairs
                                                                                for n in pair}
    store = CaseStore()
    ids: Dict[str, str] = {}
    for name in sorted(names):
        case = store.create("thing", name, name, "me" if name in owned.split() else "someone-else", {})
        case.closed = name in closed.split()
        ids[name] = case.case_id
    for (sub, ref), relationship, identifier in pairs:
        store.cases[ids[sub]].set_indices({identifier: ("thing", ids[ref], relationship)})
    return store, ids


def synced(store: CaseStore, owner_ids: Sequence[str] = ("me",)) -> Set[str]:
    return {case.external_id for case in store.phone_cases(owner_ids).values()}


@pytest.mark.parametrize("graph", DOCSTRING_GRAPHS + HQ_TEST_GRAPHS, ids=lambda g: g[0])
def test_restore_sends_what_livequery_sends(graph: Graph) -> None:
    store, _ = build(graph)
    assert synced(store) == set(graph[5].split())


def test_deleted_cases_are_never_sent() -> None:
    store, ids = build(("", "a", "", "a>b", "", ""))
    store.delete(ids["b"])
    assert synced(store) == {"a"}, "the deleted parent stays off the phone"
    store.delete(ids["a"])
    assert synced(store) == set(), "an owned case, deleted, is not owned any more"
    store, ids = build(("", "a", "", "", "e>a", ""))
    store.delete(ids["e"])
    assert synced(store) == {"a"}, "a deleted extension is not pulled by its host"


def test_a_parent_does_not_pull_its_other_children() -> None:
    """Two children of one parent, each owned by another user: each phone gets its own child and the parent."""
    store, ids = build(("", "", "", "mine>course theirs>course", "", ""))
    store.cases[ids["mine"]].owner_id = "me"
    store.cases[ids["theirs"]].owner_id = "them"
    assert synced(store, ["me"]) == {"mine", "course"}
    assert synced(store, ["them"]) == {"theirs", "course"}
    assert synced(store, ["someone-else"]) == {"course"}, "the parent's owner gets no children"


# ---------------------------------------------------------------------------------------------------- emulator
GROUP = "coaches-math"  # a case-sharing group: owns the course cases
REPORTING = "reporting-only"
SCHOOL, DISTRICT, OTHER_SCHOOL = "school-1", "district-1", "school-2"
WORKERS = ("student-a", "student-b", "student-c", "coach")
KINDS = {GROUP: "group", REPORTING: "group_not_sharing", SCHOOL: "location", OTHER_SCHOOL: "location",
         DISTRICT: "location_not_sharing"}


@pytest.fixture
def hq() -> Iterator[CommCareEmulator]:
    with CommCareEmulator(owners={*WORKERS, *KINDS}, owner_kinds=dict(KINDS),
                          case_types={"course", "student_course"}) as emulator:
        yield emulator


def upload(hq: CommCareEmulator, tmp_path: Path, case_type: str, headers: Sequence[str],
           rows: List[Sequence[Optional[str]]]) -> JobResult:
    """A workbook through the bulk upload API over real HTTP, as tests/test_commcare_emulator.py does."""
    path = tmp_path / f"{case_type}-{len(hq.uploads)}.xlsx"
    write_workbook(path, list(headers), [list(r) for r in rows])
    cc = CommCareClient(CommCareSettings(base_url=hq.base_url, project=hq.domain, username=hq.username,
                                         api_key=hq.api_key, allow_insecure_http=True, poll_interval=0.01,
                                         backoff_factor=0.01, max_attempts=2))
    result = cc.wait(cc.upload(path, case_type))
    assert result is not None and result.state == 2
    return result


def courses(hq: CommCareEmulator, tmp_path: Path, *external_ids: str) -> None:
    upload(hq, tmp_path, "course", ["external_id", "name", "owner_id"], [[e, e, GROUP] for e in external_ids])


def case_api(hq: CommCareEmulator, external_id: str) -> Dict[str, object]:
    auth = {"Authorization": f"ApiKey {hq.username}:{hq.api_key}"}
    answer = requests.get(f"{hq.base_url}/a/{hq.domain}/api/case/v2/", params={"external_id": external_id},
                          headers=auth, timeout=10).json()
    [case] = answer["cases"]
    return case  # type: ignore[no-any-return]


INVALID = "An invalid or unknown parent case was specified for the uploaded case."


def test_parent_columns_as_hq_reads_them(hq: CommCareEmulator, tmp_path: Path) -> None:
    courses(hq, tmp_path, "c-1")
    headers = ["external_id", "name", "owner_id", "parent_external_id", "parent_type", "parent_relationship_type",
               "parent_identifier"]
    result = upload(hq, tmp_path, "student_course", headers, [
        ["sc-1", "ok", "student-a", "c-1", "course", "child", None],
        ["sc-2", "bad relationship", "student-a", "c-1", "course", "sibling", None],
        ["sc-3", "extension, no identifier", "student-a", "c-1", "course", "extension", None],
        ["sc-4", "wrong parent type", "student-a", "c-1", "student", "child", None],
        ["sc-5", "bad relationship, no parent", "student-a", "c-9", "course", "sibling", None],
        ["sc-6", "blank relationship cell", "student-a", "c-1", "course", None, None],
        ["sc-7", "extension", "student-a", "c-1", "course", "extension", "host"],
        ["sc-8", "blank parent_type: any type", "student-a", "c-1", None, "child", "course"],
    ])
    assert result.created == 3
    assert result.row_errors() == {
        # validate_parent_column raises InvalidParentId(_("...")): the sentence lands in column_name
        3: f"Invalid Parent ID (Invalid value for 'parent_relationship_type' column): {INVALID}",
        4: "Invalid Parent ID ('parent_identifier' column must be provided when 'parent_relationship_type' column "
           f"is set to 'extension'): {INVALID}",
        5: "Invalid Parent ID (parent_external_id): Could not find parent case",
        6: "Invalid Parent ID (parent_external_id): Could not find parent case",  # found first, checked after
        7: f"Invalid Parent ID (Invalid value for 'parent_relationship_type' column): {INVALID}",  # None
    }
    course_id = hq.by_external_id("course")["c-1"].case_id
    made = hq.by_external_id("student_course")
    assert made["sc-1"].indices == {"parent": ("course", course_id, "child")}
    assert made["sc-7"].indices == {"host": ("course", course_id, "extension")}
    assert made["sc-8"].indices == {"course": ("course", course_id, "child")}
    assert case_api(hq, "sc-7")["indices"] == {
        "host": {"case_id": course_id, "case_type": "course", "relationship": "extension"}}


def test_parent_type_defaults_to_the_imports_case_type(hq: CommCareEmulator, tmp_path: Path) -> None:
    courses(hq, tmp_path, "c-1")
    result = upload(hq, tmp_path, "student_course", ["external_id", "name", "parent_external_id"],
                    [["sc-1", "no parent_type column", "c-1"]])
    assert result.row_errors() == {2: "Invalid Parent ID (parent_external_id): Could not find parent case"}


def test_parent_id_is_looked_up_by_case_id_and_tried_first(hq: CommCareEmulator, tmp_path: Path) -> None:
    courses(hq, tmp_path, "c-1", "c-2")
    c1, c2 = (hq.by_external_id("course")[e].case_id for e in ("c-1", "c-2"))
    result = upload(hq, tmp_path, "student_course",
                    ["external_id", "name", "owner_id", "parent_id", "parent_external_id", "parent_type"],
                    [["sc-1", "by id", "student-a", c2, "c-1", "course"],
                     ["sc-2", "unknown id", "student-a", "no-such-case", "c-1", "course"]])
    assert result.row_errors() == {3: "Invalid Parent ID (parent_id): Could not find parent case"}, "no fallback"
    assert hq.by_external_id("student_course")["sc-1"].indices == {"parent": ("course", c2, "child")}
    assert c1 != c2


def test_an_update_sets_only_its_own_identifier(hq: CommCareEmulator, tmp_path: Path) -> None:
    courses(hq, tmp_path, "c-1", "c-2", "c-3")
    c1, c2, c3 = (hq.by_external_id("course")[e].case_id for e in ("c-1", "c-2", "c-3"))
    headers = ["external_id", "name", "owner_id", "parent_external_id", "parent_type", "parent_relationship_type",
               "parent_identifier"]
    upload(hq, tmp_path, "student_course", headers, [["sc-1", "A", "student-a", "c-1", "course", "child", None]])
    second = upload(hq, tmp_path, "student_course", headers,
                    [["sc-1", "A", "student-a", "c-2", "course", "extension", "host"]])
    assert second.updated == 1
    case = hq.by_external_id("student_course")["sc-1"]
    assert case.indices == {"parent": ("course", c1, "child"), "host": ("course", c2, "extension")}
    assert case.parent == ("parent", c1)
    upload(hq, tmp_path, "student_course", headers, [["sc-1", "A", "student-a", "c-3", "course", "child", None]])
    assert case.indices == {"parent": ("course", c3, "child"), "host": ("course", c2, "extension")}, "replaced"
    assert case_api(hq, "sc-1")["indices"] == {
        "parent": {"case_id": c3, "case_type": "course", "relationship": "child"},
        "host": {"case_id": c2, "case_type": "course", "relationship": "extension"}}


def test_owner_and_parent_errors_in_hqs_order(hq: CommCareEmulator, tmp_path: Path) -> None:
    """get_create_caseblock checks the owner before the parent; get_update_caseblock the parent first."""
    courses(hq, tmp_path, "c-1")
    headers = ["external_id", "name", "owner_id", "parent_external_id", "parent_type"]
    upload(hq, tmp_path, "student_course", headers, [["sc-1", "A", "student-a", "c-1", "course"]])
    result = upload(hq, tmp_path, "student_course", headers, [["sc-1", "A", "nobody", "c-9", "course"],
                                                              ["sc-2", "B", "nobody", "c-9", "course"]])
    assert result.row_errors() == {
        2: "Invalid Parent ID (parent_external_id): Could not find parent case",
        3: "Invalid Owner (owner_id): Owner ID was used in the mapping but there were errors",
    }


def test_students_phones_get_their_own_course_cases_only(hq: CommCareEmulator, tmp_path: Path) -> None:
    """Issue 16 end to end: course cases owned by a case-sharing group, student_course children owned by each
    student's mobile worker, uploaded over HTTP; then what each phone's restore would hold."""
    courses(hq, tmp_path, "c-1", "c-2", "c-3")
    upload(hq, tmp_path, "student_course", ["external_id", "name", "owner_id", "parent_external_id", "parent_type"], [
        ["sc-a-1", "A in 1", "student-a", "c-1", "course"],
        ["sc-a-2", "A in 2", "student-a", "c-2", "course"],
        ["sc-b-1", "B in 1", "student-b", "c-1", "course"],
        ["sc-b-3", "B in 3", "student-b", "c-3", "course"],
    ])

    def phone(user: str) -> Set[Tuple[str, str]]:
        return {(c.case_type, c.external_id) for c in hq.phone_cases(user).values()}

    assert phone("student-a") == {("student_course", "sc-a-1"), ("student_course", "sc-a-2"), ("course", "c-1"),
                                  ("course", "c-2")}
    assert phone("student-b") == {("student_course", "sc-b-1"), ("student_course", "sc-b-3"), ("course", "c-1"),
                                  ("course", "c-3")}
    assert phone("student-c") == set(), "a worker with no cases gets nothing"
    assert phone("coach") == set(), "not in the group yet"
    hq.add_group_member(GROUP, "coach")
    assert phone("coach") == {("course", "c-1"), ("course", "c-2"), ("course", "c-3")}, "no student's cases"
    # A leaves course 2: the enrolment closes, and the course goes with it (A is not in the owning group)
    upload(hq, tmp_path, "student_course", ["external_id", "close"], [["sc-a-2", "yes"]])
    assert phone("student-a") == {("student_course", "sc-a-1"), ("course", "c-1")}


def test_which_owner_ids_a_mobile_workers_phone_syncs(hq: CommCareEmulator) -> None:
    """CommCareUser.get_owner_ids: the user, case-sharing locations assigned (and, under a type that views
    descendants, the sharing locations below), case-sharing groups the user is in."""
    assert hq.restore_owner_ids("student-a") == ["student-a"], "none by default"
    hq.add_group_member(GROUP, "student-a")
    hq.add_group_member(REPORTING, "student-a")
    assert hq.restore_owner_ids("student-a") == ["student-a", GROUP], "a reporting group gives nothing"
    hq.set_location_parent(SCHOOL, DISTRICT)
    hq.set_location_parent(OTHER_SCHOOL, DISTRICT)
    hq.assign_location("student-a", SCHOOL)
    assert hq.restore_owner_ids("student-a") == ["student-a", SCHOOL, GROUP], "not the district above it"
    hq.assign_location("student-b", DISTRICT)
    assert hq.restore_owner_ids("student-b") == ["student-b"], "a district shares no cases, views no descendants"
    hq.view_descendants.add("location_not_sharing")
    assert hq.restore_owner_ids("student-b") == ["student-b", SCHOOL, OTHER_SCHOOL]
    with pytest.raises(ValueError):
        hq.restore_owner_ids(GROUP)
    with pytest.raises(ValueError):
        hq.add_group_member(SCHOOL, "student-a")
    groups = {g["id"]: g["users"] for g in hq.v05_objects("group")}
    assert groups[GROUP] == ["student-a"]
    assert next(u for u in hq.v05_objects("user") if u["id"] == "student-a")["groups"] == [GROUP, REPORTING]


def test_a_course_owned_by_a_location_reaches_the_workers_assigned_there(hq: CommCareEmulator,
                                                                         tmp_path: Path) -> None:
    upload(hq, tmp_path, "course", ["external_id", "name", "owner_id"], [["c-9", "at school", SCHOOL]])
    assert hq.phone_cases("student-c") == {}
    hq.assign_location("student-c", SCHOOL)
    assert [c.external_id for c in hq.phone_cases("student-c").values()] == ["c-9"]
