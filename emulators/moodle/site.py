"""The Moodle site's settings and version: what changes the shape of an answer besides who asks.

Every rule here was read in moodle/moodle (paths beside each); what a 4.1 site does differently from a 4.5
site is switched on `SiteConfig.version`. Defaults are Moodle's own install defaults unless a field says
otherwise; `SiteConfig.recommended()` is a site set up as this project's README asks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Dict, Optional, Tuple

VERSIONS: Dict[str, Tuple[str, str]] = {
    # $CFG->version and $CFG->release as core_webservice_get_site_info returns them (webservice/externallib.php)
    "4.1": ("2022112800", "4.1 (Build: 20221128)"),
    "4.5": ("2024100700", "4.5 (Build: 20241007)"),  # as ../shared/moodle-real-4.5 answered
    # A release newer than the connector is tested with, for `check`'s version warning: only its site info (version,
    # release: public/version.php of 5.0) is modelled; every other answer is 4.5's (at_least("4.5") holds)
    "5.0": ("2025041400", "5.0 (Build: 20250414)"),
}

# lib/UPGRADING.md, 4.5, MDL-81919: these exceptions moved to \core\exception; get_class() then reports the
# namespaced name (the real 4.5 capture: "core\\exception\\moodle_exception"). webservice_access_exception
# and dml_* kept their plain names (captures errors/function_not_in_service.json, enrolled_users.no_such_course.json).
NAMESPACED_IN_45 = frozenset({
    "coding_exception", "invalid_parameter_exception", "invalid_response_exception", "moodle_exception",
    "require_login_exception", "required_capability_exception",
})


@dataclass(frozen=True)
class SiteConfig:
    version: str = "4.5"
    lang: str = "en"  # $CFG->lang
    languages: Tuple[str, ...] = ("en", "sw", "fr")  # installed language packs
    # Site administration > Users > Permissions > User policies > Show user identity; install default 'email'
    # (admin/settings/users.php). Listed fields are shown only to callers with moodle/site:viewuseridentity
    # (core_user\fields::get_identity_fields).
    showuseridentity: Tuple[str, ...] = ("email",)
    # "Hide user fields" (default empty); 'lastaccess' also hides lastcourseaccess (user/lib.php).
    hiddenuserfields: Tuple[str, ...] = ()
    # $CFG->filterall (default 0, lib/db/install.php) and whether multilang is on for headings; formatstringstriptags
    # defaults to 1. Together they decide what format_string does to a name (lib/weblib.php, lib/classes/formatting.php).
    filterall: bool = False
    multilang_filter: bool = True
    formatstringstriptags: bool = True
    # $CFG->debug >= DEBUG_NORMAL: error bodies then carry `debuginfo` (webservice/rest/locallib.php generate_error)
    debugging: bool = False
    # grade/report/user/settings.php defaults: letters off, ranges on; grade_report_showonlyactiveenrol = 1
    grade_report_showlettergrade: bool = False
    grade_report_showrange: bool = True
    # grade/report/user/settings.php showtotalsifcontainhidden default 0: totals with hidden items are blanked
    grade_report_showtotalsifcontainhidden: int = 0
    # Site administration > General > Location settings. $CFG->timezone: admin_setting_servertimezone's default is
    # PHP's timezone, but "Nobody really wants UTC", so 'Europe/London' when PHP's is UTC; '99' means PHP's own
    # (lib/classes/date.php get_server_timezone). $CFG->forcetimezone: default 99, users choose their own.
    # php_timezone is php.ini's date.timezone (core_date::get_default_php_timezone). Read by userdate() (reports.py).
    timezone: str = "Europe/London"
    forcetimezone: str = "99"
    php_timezone: str = "UTC"
    # Site administration > Advanced features > Enable custom reports ($CFG->enablecustomreports, default 1):
    # core_reportbuilder\permission::can_view_reports_list() is false without it (reports.py)
    enablecustomreports: bool = True

    @classmethod
    def recommended(cls, **changes: object) -> "SiteConfig":
        """The site settings the README asks for: phones in "Show user identity"."""
        return replace(cls(showuseridentity=("email", "phone1", "phone2")), **changes)  # type: ignore[arg-type]

    @property
    def version_number(self) -> str:
        return VERSIONS[self.version][0]

    @property
    def release(self) -> str:
        return VERSIONS[self.version][1]

    @property
    def branch(self) -> str:
        """$CFG->branch (version.php): '405' for 4.5, as get_docs_url() puts it in a docs link."""
        major, minor = self.version.split(".")
        return f"{int(major)}{int(minor):02d}"

    def at_least(self, version: str) -> bool:
        return tuple(map(int, self.version.split("."))) >= tuple(map(int, version.split(".")))

    def exception_class(self, name: str) -> str:
        return f"core\\exception\\{name}" if self.at_least("4.5") and name in NAMESPACED_IN_45 else name


@dataclass
class CallSettings:
    """The per-call moodlewssetting* values (webservice/lib.php set_web_service_call_settings)."""

    raw: bool = False
    filter: bool = False
    lang: str = ""
    # moodlewssettingfileurl (default true): rewrite pluginfile URLs to webservice/pluginfile.php. Carried (a batched
    # sub-call sets it per request) but not modelled: no answer of the emulator holds a file URL it would rewrite.
    fileurl: bool = True
    # moodlewssettingtimezone (PARAM_TIMEZONE, default ''; 4.1 and 4.5 alike): webservice_base_server::run() sets
    # $USER->timezone to it unless $CFG->forcetimezone is set, for the whole request (a batch's sub-calls too)
    timezone: str = ""

    @classmethod
    def from_request(cls, flat: Dict[str, str], site: SiteConfig) -> "CallSettings":
        lang = flat.get("moodlewssettinglang", "")
        return cls(raw=flat.get("moodlewssettingraw") in ("1", "true"),
                   filter=flat.get("moodlewssettingfilter") in ("1", "true"),
                   lang=lang if lang in site.languages else "",  # PARAM_LANG cleans unknown codes to ''
                   fileurl=flat.get("moodlewssettingfileurl", "1") not in ("0", "false", ""),
                   timezone=clean_timezone(flat.get("moodlewssettingtimezone", "")))


# clean_param(PARAM_TIMEZONE) (lib/moodlelib.php; core\param in 4.5): an offset, 99, or a zone-like name; anything else
# becomes '' (then ignored: run() applies only a non-empty value). POSIX classes are ASCII in PCRE without /u.
_PARAM_TIMEZONE = re.compile(r"^(([+-]?(0?[0-9](\.[5|0])?|1[0-3](\.0)?|1[0-2]\.5))|(99)|[A-Za-z0-9]+(/?[A-Za-z_-])+)$")


def clean_timezone(value: str) -> str:
    return value if _PARAM_TIMEZONE.match(value) else ""  # PCRE's $, like Python's, also matches before a final \n


@dataclass
class Formatter:
    """format_string as a web-service answer applies it (\\core_external\\util::format_string)."""

    site: SiteConfig
    call: CallSettings = field(default_factory=CallSettings)
    user_lang: str = ""
    site_url: str = "https://moodle.demo-academy.example"  # $CFG->wwwroot

    @property
    def current_language(self) -> str:
        # webservice_base_server::run sets $SESSION->lang from moodlewssettinglang; else the user's, else the site's
        return self.call.lang or self.user_lang or self.site.lang

    def string(self, text: Optional[str]) -> Optional[str]:
        """Escape `&`, run filters only with filterall and filter=1, then strip tags (lib/classes/formatting.php)."""
        if text is None or self.call.raw:
            return text
        out = re.sub(r"&(?![a-zA-Z0-9#]{1,8};)", "&amp;", text)  # replace_ampersands_not_followed_by_entity
        if self.site.filterall and self.call.filter and self.site.multilang_filter:
            out = multilang(out, self.current_language)
        if self.site.formatstringstriptags:
            out = re.sub(r"<[^>]*>", "", out).replace("<", "&lt;").replace(">", "&gt;")
        return out


# filter/multilang/classes/text_filter.php, new syntax: a span, then one or more (whitespace, span); each span has
# exactly the attributes lang=".." and class="multilang", in either order; whitespace after the last span stays
_SPAN = r'<span(?:\s+lang="[a-zA-Z0-9_-]+"\s+class="multilang"|\s+class="multilang"\s+lang="[a-zA-Z0-9_-]+")\s*>.*?</span>'
_BLOCK = re.compile(rf"{_SPAN}(?:\s*{_SPAN})+", re.S | re.I)
_ONE = re.compile(r'<span[^>]+lang="([a-zA-Z0-9_-]+)"[^>]*>(.*?)</span>', re.S | re.I)


def multilang(text: str, current: str) -> str:
    """The current language, then its parents, then 'en', then the first block (text_filter::process_match)."""

    def choose(match: "re.Match[str]") -> str:
        blocks: Dict[str, str] = {}
        for lang, content in _ONE.findall(match.group(0)):
            blocks[lang.lower().replace("-", "_")] = content
        lang = current.lower()
        while lang:
            if lang in blocks:
                return blocks[lang]
            lang = lang.rsplit("_", 1)[0] if "_" in lang else ("en" if lang != "en" else "")
        return next(iter(blocks.values()))

    return _BLOCK.sub(choose, text)
