"""Moodle's stored text as a phone should show it: one language, no markup, no HTML entities.

Names arrive as stored (the extract asks for raw values, see pipelines/moodle/client.py CALL_SETTINGS):
multi-language blocks (`<span lang="sw" class="multilang">…</span>`, or the older `<lang lang="sw">…</lang>`)
are resolved the way Moodle's multilang filter does (filter/multilang/classes/text_filter.php): the chosen
language, then its parents (sw_ke -> sw), then English, then the first block. Grade values may carry the
pass/fail icon markup of the user report, and ranges `&ndash;`; both become plain text.
"""

from __future__ import annotations

import html
import re
from typing import Dict, Optional

_BLOCK_PART = r'(?:<span\b[^>]*\blang="[a-zA-Z0-9_-]+"[^>]*>.*?</span>|<lang\b[^>]*\blang="[a-zA-Z0-9_-]+"[^>]*>.*?</lang>)'
_BLOCKS = re.compile(rf"{_BLOCK_PART}(?:\s*{_BLOCK_PART})*", re.S | re.I)
_ONE = re.compile(r'<(span|lang)\b[^>]*\blang="([a-zA-Z0-9_-]+)"[^>]*>(.*?)</\1>', re.S | re.I)
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def choose_language(blocks: Dict[str, str], lang: Optional[str]) -> str:
    current = (lang or "en").lower().replace("-", "_")
    while current:
        if current in blocks:
            return blocks[current]
        current = current.rsplit("_", 1)[0] if "_" in current else ("en" if current != "en" else "")
    return next(iter(blocks.values()))


def plain_text(raw: Optional[str], lang: Optional[str] = None) -> Optional[str]:
    """One language, tags stripped, entities decoded, whitespace collapsed; None stays None."""
    if raw is None:
        return None

    def resolve(match: "re.Match[str]") -> str:
        blocks: Dict[str, str] = {}
        for _, code, content in _ONE.findall(match.group(0)):
            blocks[code.lower().replace("-", "_")] = content
        return choose_language(blocks, lang) if blocks else match.group(0)

    text = _BLOCKS.sub(resolve, raw) if "lang=" in raw else raw
    text = html.unescape(_TAG.sub(" ", text))
    return _SPACE.sub(" ", text).strip()
