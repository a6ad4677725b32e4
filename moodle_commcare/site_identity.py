"""The site key inside every external id, pinned at the first transform so a move of the site keeps its cases.

External ids embed a key for the Moodle site (`moodle-<key>-u-<id>`) so two sites never collide in one
CommCare project. Derived afresh from the site's address on every run, a site moved to a new address (a
new domain, http to https under a proxy, a path change) would get new ids for every student: every case
created twice in CommCare, and the old ones never closed. So the key is stored the first time
(`ops.site_identity`) and used ever after; a changed address stops the transform until the user says
whether it is the same site (keep the key) or another one (a new warehouse).
"""

from __future__ import annotations

import re
from typing import Any, Dict, Optional

from .database import MISSING_TABLE, UTC_NOW_SQL, Opens

TABLE = "ops.site_identity"


class SiteMoved(Exception):
    """The Moodle site's address differs from the one the warehouse's cases were created for."""


def slug(url: str) -> str:
    """What int_moodle__site computed from the address: host and path, lower case, runs of other characters
    as one '-' (https://www.school.org/moodle -> school-org-moodle)."""
    text = re.sub(r"^[a-z]+://(www\.)?", "", url.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def ensure_table(con: Any) -> None:
    con.execute("create schema if not exists ops")
    con.execute(f"create table if not exists {TABLE} (site_key varchar not null, site_url varchar not null, "
                "pinned_at timestamp, moved_from varchar)")


def pin(db: Opens, dbt_vars: Optional[Dict[str, Any]], accept_move: bool = False) -> Optional[str]:
    """The site key for this transform: pinned at the first run, checked on every other. None before any extract."""
    con = db.connect()
    try:
        try:
            row = con.execute("select siteurl from moodle_raw.site_info order by extracted_at desc limit 1").fetchone()
        except MISSING_TABLE:
            return None
        if row is None:
            return None
        url = str(row[0])
        ensure_table(con)
        wanted = (dbt_vars or {}).get("moodle_site_key")
        pinned = con.execute(f"select site_key, site_url from {TABLE}").fetchone()
        if pinned is None:
            key = str(wanted or slug(url))
            con.execute(f"insert into {TABLE} values (?, ?, {UTC_NOW_SQL}, null)", [key, url])
            return key
        key, known_url = pinned
        if wanted and wanted != key:
            raise SiteMoved(
                f"moodle_site_key={wanted!r}, but this warehouse's cases carry the site key {key!r}: a new key would "
                "give every student and enrolment a new case in CommCare, the old ones left open. Drop the var to "
                "keep the key, or start a new warehouse (--warehouse, MOODLE_COMMCARE_WAREHOUSE) and CommCare project for it.")
        if url != known_url:
            if not accept_move:
                raise SiteMoved(
                    f"The Moodle site's address changed from {known_url} to {url}. This warehouse's cases carry the "
                    f"site key {key!r}. If it is the same site at a new address, run `moodle-commcare transform "
                    "--accept-site-move`: the key is kept, so every case stays the same. If it is another Moodle "
                    "site, use a new warehouse (--warehouse, MOODLE_COMMCARE_WAREHOUSE) for it.")
            con.execute(f"update {TABLE} set site_url = ?, moved_from = ?", [url, known_url])
        return str(key)
    finally:
        con.close()
