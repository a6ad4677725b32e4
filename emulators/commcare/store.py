"""The emulated project's cases, indexed as CommCare HQ looks them up, and what a phone's restore sends.

external_id is NOT unique in CommCare: a case is created with a fresh uuid and its external_id is an
ordinary field (corehq/form_processor/models/cases.py, CommCareCase.external_id has no unique constraint).
The importer looks a row up with `get_case_by_external_id(domain, external_id, case_type,
raise_multiple=True)` and turns MultipleObjectsReturned into the row error "Too Many Matches"
(corehq/apps/case_importer/do_import.py `_CaseImportRow.get_case`, exceptions.py `TooManyMatches`).
The lookup excludes deleted cases only: a closed case still matches and is updated in place. With no case type
(a blank parent_type cell) it matches any type (form_processor/models/cases.py
`CommCareCaseManager.get_case_by_external_id`: "optional case type").

Indices (casexml CaseBlock, corehq/apps/hqcase/api/core.py `serialize_case`):
- a case holds {identifier: (referenced case_type, referenced case_id, relationship)}, relationship "child" or
  "extension" (casexml/apps/case/const.py CASE_INDEX_CHILD / CASE_INDEX_EXTENSION). A caseblock's <index> sets
  or replaces only the identifiers it names; the others stay.
- Case API v2 serialises them as {identifier: {"case_id", "case_type", "relationship"}}, skipping deleted
  indices (an index whose referenced_id was blanked).

What a mobile worker's phone receives (corehq/ex-submodules/casexml/apps/phone/data_providers/case/livequery.py
`do_livequery` -> `get_live_case_ids_and_indices`, ported in `CaseStore.live_case_ids`):
- start from the OPEN, not deleted cases owned by the restore's owner ids (`get_case_ids_in_domain_by_owners(...,
  closed=False)`); walk the indices (`CommCareCaseIndex.objects.get_related_indices`, sql_accessors/sql_templates/
  get_related_indices.sql): from a case to its parents and hosts, and from a host to its open extensions only.
- "live" = synced. An owned open case that is not an extension is live. Enlivening a case enlivens its parents
  (child index), its hosts and its OPEN extensions; a parent never pulls its other children. An open extension
  whose host is live is live. A host that is open, not itself an extension and has a live (or owned) extension
  is live. Closed extensions are ignored; a case that is both child and extension counts as a child.
- Indices touching a deleted case are skipped: a deleted case is never sent.
So a student's phone gets their own student_course cases and the course cases above them, nothing of classmates.
livequery.py's own docstring lists `a(closed) <--ext-- b <--chi-- c(owned) >> []`, but its code sends a b c (c is
owned and not an extension, so live; enlivening it enlivens its parent b, and b's extension index enlivens a), as
HQ's test data expects for the same graph with b closed too (casexml/apps/phone/tests/data/
case_relationship_tests.json "open_child_of_closed_extension"): the emulator follows the code, and
tests/test_commcare_phone.py runs every graph of that file.
"""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import chain
from typing import Callable, DefaultDict, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

CHILD = "child"  # casexml/apps/case/const.py CASE_INDEX_CHILD
EXTENSION = "extension"  # CASE_INDEX_EXTENSION
Index = Tuple[str, str, str]  # (referenced case_type, referenced case_id, relationship)


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Case:
    case_id: str
    case_type: str
    external_id: str
    name: str
    owner_id: str
    properties: Dict[str, str] = field(default_factory=dict)
    indices: Dict[str, Index] = field(default_factory=dict)  # identifier -> (type, case_id, relationship)
    closed: bool = False
    date_opened: str = field(default_factory=now_iso)
    last_modified: str = field(default_factory=now_iso)
    date_closed: Optional[str] = None
    deleted: bool = False  # soft-deleted (HQ tags deleted cases; they stay in the database)

    @property
    def parent(self) -> Optional[Tuple[str, str]]:
        """(identifier, case_id) of the child index named `parent`, else of the first child index."""
        children = [(name, ix[1]) for name, ix in self.indices.items() if ix[2] == CHILD and ix[1]]
        named = [c for c in children if c[0] == "parent"]
        return (named or children)[0] if children else None

    def set_indices(self, indices: Dict[str, Index]) -> None:
        """CaseBlock <index>: each named identifier is set or replaced, the others stay; a blank case id removes
        the index (CommCareCaseIndex.is_deleted: an index whose referenced_id is empty)."""
        for identifier, index in indices.items():
            if index[1]:
                self.indices[identifier] = index
            else:
                self.indices.pop(identifier, None)

    def serialize(self, domain: str) -> Dict[str, object]:
        """Case API v2's shape (corehq/apps/hqcase/api/core.py `serialize_case`)."""
        indices = {name: {"case_id": case_id, "case_type": case_type, "relationship": relationship}
                   for name, (case_type, case_id, relationship) in self.indices.items() if case_id}
        return {"domain": domain, "case_id": self.case_id, "case_type": self.case_type, "case_name": self.name,
                "external_id": self.external_id, "owner_id": self.owner_id, "date_opened": self.date_opened,
                "last_modified": self.last_modified, "server_last_modified": self.last_modified,
                "indexed_on": self.last_modified, "closed": self.closed, "date_closed": self.date_closed,
                "properties": dict(self.properties), "indices": indices}


class IndexRow(NamedTuple):
    """One CommCareCaseIndex row: case `case_id` points at `referenced_id` under `identifier`."""
    case_id: str
    identifier: str
    referenced_id: str
    relationship: str


class CaseStore:
    """Cases by id, plus an index (case_type, external_id) -> case ids in creation order."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.cases: Dict[str, Case] = {}
        self._by_ext: Dict[Tuple[str, str], List[str]] = {}
        self._types: Set[str] = set()

    def find(self, case_type: Optional[str], external_id: str) -> List[Case]:
        """get_case_by_external_id: not deleted; case_type None matches every type."""
        with self.lock:
            if case_type is not None:
                return [self.cases[i] for i in self._by_ext.get((case_type, external_id), [])
                        if not self.cases[i].deleted]
            return [c for t in sorted(self._types) for c in self.find(t, external_id)]

    def create(self, case_type: str, external_id: str, name: str, owner_id: str, properties: Dict[str, str],
               indices: Optional[Dict[str, Index]] = None) -> Case:
        with self.lock:
            case = Case(uuid.uuid4().hex, case_type, external_id, name, owner_id, dict(properties))
            case.set_indices(indices or {})
            self.cases[case.case_id] = case
            self._by_ext.setdefault((case_type, external_id), []).append(case.case_id)
            self._types.add(case_type)
            return case

    def delete(self, case_id: str) -> None:
        """Soft-delete, as HQ does (the case stays, flagged deleted): lookups and restores skip it."""
        with self.lock:
            self.cases[case_id].deleted = True

    def case_types(self) -> Set[str]:
        with self.lock:
            return set(self._types)

    # ------------------------------------------------------------------ phone restore (livequery)
    def _related_indices(self, case_ids: Iterable[str], exclude: Set[str]) -> List[IndexRow]:
        """CommCareCaseIndex.objects.get_related_indices -> corehq/sql_accessors/sql_templates/
        get_related_indices.sql, one step: every index FROM the given cases (their parents and hosts, whatever
        their state), plus the EXTENSION indices pointing AT them from open, not deleted cases ("open extension
        cases": relationship_id = 2 AND NOT closed AND NOT deleted); a case's children are not fetched from it
        (and would not become live if they were: `enliven` climbs child indices upwards only). Indices already
        seen ('<case_id> <identifier>') are excluded."""
        wanted = set(case_ids)
        rows: List[IndexRow] = []
        for case in self.cases.values():
            for identifier, (_, ref_id, relationship) in case.indices.items():
                if f"{case.case_id} {identifier}" in exclude:
                    continue
                outgoing = case.case_id in wanted
                incoming = (ref_id in wanted and relationship == EXTENSION and not case.closed
                            and not case.deleted)
                if outgoing or incoming:
                    rows.append(IndexRow(case.case_id, identifier, ref_id, relationship))
        return rows

    def live_case_ids(self, owner_ids: Iterable[str]) -> Set[str]:
        """livequery.py `do_livequery` / `get_live_case_ids_and_indices`, line for line: the case ids a restore
        for these owner ids sends (a fresh restore: no last sync log)."""
        with self.lock:
            owners = set(owner_ids)
            # get_case_ids_in_domain_by_owners(domain, owner_ids, closed=False): open, not deleted
            owned_list = [c.case_id for c in self.cases.values()
                          if c.owner_id in owners and not c.closed and not c.deleted]
            return _live_ids(owned_list, self._related_indices, self._closed_and_deleted)

    def _closed_and_deleted(self, case_ids: Iterable[str]) -> List[Tuple[str, bool, bool]]:
        """CommCareCase.objects.get_closed_and_deleted_ids: (case_id, closed, deleted) of those closed or deleted."""
        out = []
        for case_id in case_ids:
            case = self.cases.get(case_id)
            if case is None:  # an index to a case that does not exist: treated as open [infer]
                continue
            if case.closed or case.deleted:
                out.append((case_id, case.closed, case.deleted))
        return out

    def phone_cases(self, owner_ids: Iterable[str]) -> Dict[str, Case]:
        """The cases a restore for these owner ids sends, by case id."""
        with self.lock:
            return {i: self.cases[i] for i in self.live_case_ids(owner_ids) if i in self.cases}


def _live_ids(owned_list: List[str], get_related_indices: Callable[[Iterable[str], Set[str]], List[IndexRow]],
              get_closed_and_deleted_ids: Callable[[Iterable[str]], List[Tuple[str, bool, bool]]]) -> Set[str]:
    """livequery.py `get_live_case_ids_and_indices` (the closures keep HQ's names and comments)."""
    ignore = object()
    live_ids: Set[str] = set()
    deleted_ids: Set[str] = set()
    extensions_by_host: DefaultDict[str, Set[str]] = defaultdict(set)  # host_id -> (open) extension_ids
    hosts_by_extension: DefaultDict[str, Set[str]] = defaultdict(set)  # (open) extension_id -> host_ids
    parents_by_child: DefaultDict[str, Set[str]] = defaultdict(set)  # child_id -> parent_ids
    seen_ix: DefaultDict[str, Set[str]] = defaultdict(set)  # case_id -> {'<index.case_id> <index.identifier>'}
    has_live_cache: Dict[str, bool] = {}  # HQ: the `cache={}` default of the closure, new on every call

    def is_extension(case_id: str) -> bool:
        # A case that is both a child and an extension is not an extension.
        return case_id in hosts_by_extension and case_id not in parents_by_child

    def has_live_extension(case_id: str) -> bool:
        # an available parent cannot make its children live; an available host can make its extension live
        if case_id in has_live_cache:
            return has_live_cache[case_id]
        has_live_cache[case_id] = False
        result = any(ext_id in live_ids  # has live extension
                     or ext_id in owned_ids  # ext is owned and available, will be live
                     or has_live_extension(ext_id)
                     for ext_id in extensions_by_host[case_id])
        has_live_cache[case_id] = result
        return result

    def enliven(case_id: str) -> None:
        # Mark the given case, its extensions and their hosts as live (and its parents: a live child)
        if case_id in live_ids:
            return
        live_ids.add(case_id)
        for cid in chain(list(extensions_by_host.get(case_id, ())), list(hosts_by_extension.get(case_id, ())),
                         list(parents_by_child.get(case_id, ()))):
            enliven(cid)

    def classify(index: IndexRow, prev_ids: Set[str]) -> object:
        sub_id, ref_id, relationship = index.case_id, index.referenced_id, index.relationship
        ix_key = f"{index.case_id} {index.identifier}"
        if ix_key in seen_ix[sub_id]:
            return ignore  # unexpected, don't process duplicate index twice
        seen_ix[sub_id].add(ix_key)
        seen_ix[ref_id].add(ix_key)
        if sub_id in live_ids:
            enliven(ref_id)  # ref has a live child or extension
        elif relationship == EXTENSION:
            if sub_id in open_ids:
                if ref_id in live_ids:
                    enliven(sub_id)  # sub is open and is the extension of a live case
                else:  # live status pending
                    extensions_by_host[ref_id].add(sub_id)
                    hosts_by_extension[sub_id].add(ref_id)
            else:
                return ignore  # closed extension
        elif sub_id in owned_ids:
            enliven(sub_id)  # sub is owned and available (open and not an extension case)
            enliven(ref_id)  # ref has a live child
        else:
            parents_by_child[sub_id].add(ref_id)  # live status pending: if sub becomes live -> ref has a live child
        next_id = ref_id if sub_id in prev_ids else sub_id
        return next_id if next_id not in all_ids else ignore  # else: circular reference

    def update_open_and_deleted_ids(related: List[IndexRow]) -> None:
        case_ids = {cid for index in related for cid in (index.case_id, index.referenced_id) if cid not in all_ids}
        # we know these are open since we filter by closed and deleted when fetching the indexes
        open_cases = {index.case_id for index in related if index.relationship == EXTENSION}
        for case_id, closed, deleted in get_closed_and_deleted_ids(sorted(case_ids - open_cases)):
            if deleted:
                deleted_ids.add(case_id)
            if closed or deleted:
                case_ids.discard(case_id)
        open_ids.update(case_ids)

    all_ids: Set[str] = set(owned_list)
    next_ids: Set[str] = set(owned_list)
    owned_ids = set(owned_list)  # owned, open case ids (may be extensions)
    open_ids = set(owned_list)
    while next_ids:
        exclude = set(chain.from_iterable(seen_ix[i] for i in next_ids))
        related = get_related_indices(sorted(next_ids), exclude)
        if not related:
            break
        related_not_deleted = [index for index in related if index.referenced_id]  # filter_deleted_indices
        update_open_and_deleted_ids(related_not_deleted)
        found = {classify(index, next_ids) for index in related_not_deleted
                 if index.referenced_id not in deleted_ids and index.case_id not in deleted_ids}
        found.discard(ignore)
        next_ids = {str(i) for i in found}
        all_ids.update(next_ids)

    # enliven open roots: owned, open, not an extension -> live
    for case_id in owned_ids:
        if not is_extension(case_id):
            enliven(case_id)
    # available case with live extension -> live
    for case_id in list(open_ids):
        if case_id not in live_ids and not is_extension(case_id) and has_live_extension(case_id):
            enliven(case_id)
    return live_ids
