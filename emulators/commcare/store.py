"""The emulated project's cases, indexed as CommCare HQ looks them up.

external_id is NOT unique in CommCare: a case is created with a fresh uuid and its external_id is an
ordinary field (corehq/form_processor/models/cases.py, CommCareCase.external_id has no unique constraint).
The importer looks a row up with `get_case_by_external_id(domain, external_id, case_type,
raise_multiple=True)` and turns MultipleObjectsReturned into the row error "Too Many Matches"
(corehq/apps/case_importer/do_import.py `_CaseImportRow.get_case`, exceptions.py `TooManyMatches`).
The lookup excludes deleted cases only: a closed case still matches and is updated in place.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Dict, List, Optional, Set, Tuple


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
    parent: Optional[Tuple[str, str]] = None  # (identifier, parent case_id)
    closed: bool = False
    date_opened: str = field(default_factory=now_iso)
    last_modified: str = field(default_factory=now_iso)
    date_closed: Optional[str] = None

    def serialize(self, domain: str) -> Dict[str, object]:
        """Case API v2's shape (corehq/apps/hqcase/api/core.py `serialize_case`)."""
        indices = {}
        if self.parent:
            indices[self.parent[0]] = {"case_id": self.parent[1], "relationship": "child"}
        return {"domain": domain, "case_id": self.case_id, "case_type": self.case_type, "case_name": self.name,
                "external_id": self.external_id, "owner_id": self.owner_id, "date_opened": self.date_opened,
                "last_modified": self.last_modified, "server_last_modified": self.last_modified,
                "indexed_on": self.last_modified, "closed": self.closed, "date_closed": self.date_closed,
                "properties": dict(self.properties), "indices": indices}


class CaseStore:
    """Cases by id, plus an index (case_type, external_id) -> case ids in creation order."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.cases: Dict[str, Case] = {}
        self._by_ext: Dict[Tuple[str, str], List[str]] = {}
        self._types: Set[str] = set()

    def find(self, case_type: Optional[str], external_id: str) -> List[Case]:
        with self.lock:
            if case_type is not None:
                return [self.cases[i] for i in self._by_ext.get((case_type, external_id), [])]
            return [c for t in sorted(self._types) for c in self.find(t, external_id)]

    def create(self, case_type: str, external_id: str, name: str, owner_id: str, properties: Dict[str, str],
               parent: Optional[Tuple[str, str]]) -> Case:
        with self.lock:
            case = Case(uuid.uuid4().hex, case_type, external_id, name, owner_id, dict(properties), parent)
            self.cases[case.case_id] = case
            self._by_ext.setdefault((case_type, external_id), []).append(case.case_id)
            self._types.add(case_type)
            return case

    def case_types(self) -> Set[str]:
        with self.lock:
            return set(self._types)
