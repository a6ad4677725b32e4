"""Settings of the bundled demo: which CommCare owners the demo school's cases go to, and which students have a
CommCare app of their own."""

from typing import Any, Dict, List, Set

DEFAULT_OWNER = "demo-coaches"
OWNER_MAP: List[Dict[str, Any]] = [
    # courses of category 1 and its sub-categories belong to a CommCare location...
    {"scope": "category", "moodle_id": 1, "owner_id": "demo-location-science"},
    # ...except course 2, mapped on its own: a course mapping wins over its category's
    {"scope": "course", "moodle_id": 2, "owner_id": "demo-group-biology"},
]
OWNERS: Set[str] = {DEFAULT_OWNER, *(str(row["owner_id"]) for row in OWNER_MAP)}


def dbt_vars(**extra: object) -> dict:
    return {"commcare_default_owner_id": DEFAULT_OWNER, "commcare_owner_map": OWNER_MAP, **extra}


def student_phones(school: Any, count: int = 3) -> Dict[int, str]:
    """A few active students of two or more courses, each with a mobile worker id of their own (user id -> id)."""
    def courses(uid: int) -> int:
        return sum(1 for c in school.courses if (e := school.enrolments[c].get(uid)) and e.role == "student"
                   and e.active)

    chosen = [u for u in sorted(school.users) if not school.users[u].suspended and courses(u) >= 2][:count]
    return {uid: f"demo-student-phone-{uid}" for uid in chosen}
