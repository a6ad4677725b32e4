"""tool_mobile_call_external_functions: many web-service calls in one HTTP request (Moodle 3.7+).

Read in moodle/moodle admin/tool/mobile/classes/external.php (call_external_functions, its _parameters and _returns),
admin/tool/mobile/db/services.php (declared 'type' => 'write', services MOODLE_OFFICIAL_MOBILE_SERVICE, no
'capabilities' key: the function checks no capability of its own) and lib/external/classes/external_api.php
(call_external_function; lib/externallib.php before 4.2). ../shared/specs/moodle-web-services.md section P.

- Each request: `function` (PARAM_ALPHANUMEXT), `arguments` (PARAM_RAW, a JSON object, default '{}'), `settingraw`
  (PARAM_BOOL, default false), `settingfilter` (false), `settingfileurl` (true), `settinglang` (PARAM_LANG, '').
  These are validated as a whole first (validate_parameters): one bad request fails the whole call with
  invalidparameter, before any sub-call runs.
- Per request, in order: the settings are set (external_settings::set_raw/filter/fileurl/lang, and $SESSION->lang =
  settinglang ?: the language current when the batch began, i.e. the batch's own moodlewssettinglang, else the user's,
  else the site's); `arguments` is json_decode'd, anything but an array becoming [] (validation is the function's);
  the function must be in the token's service (webservice::service_function_exists), else the response is
  {error: true, exception: {"errorcode": "accessexception", "module": "webservice"}} (no message; a `debuginfo` only
  with DEBUG_DEVELOPER). An unknown function is simply not in the service: the same answer, not the single call's
  invalidrecord. Otherwise external_api::call_external_function($function, $args, false) runs it: parameters
  validated, the function called (its own validate_context / require_capability), the answer cleaned.
- responses[i] = {error: false, data: json_encode(answer)} or {error: true, exception: json_encode(info)}: `data`
  and `exception` are JSON text inside the JSON answer, so a client decodes twice. The exception info is
  get_exception_info's (WSError.info): message, errorcode, link, moreinfourl; not the REST error body.
- It stops at the first failing request (`if ($response['error']) break;`): the ones after get no response.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Set

from .api import WSError, invalid_parameter
from .site import CallSettings, SiteConfig

# (function, args, settings) -> the function's answer, or raises WSError
SubCall = Callable[[str, Dict[str, Any], CallSettings], Any]

_KEYS = ("function", "arguments", "settingraw", "settingfilter", "settingfileurl", "settinglang")


@dataclass
class Request:
    function: str
    arguments: str
    settings: CallSettings


def php_json(value: Any) -> str:
    """json_encode($value) with no flags: '/' escaped as '\\/', non-ASCII as \\uXXXX, no spaces."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/")


def _bool(value: Any, where: str) -> bool:
    """validate_parameters' PARAM_BOOL: bool, 0, 1, '0' or '1'; anything else fails validate_param, since
    clean_param's answer ('true' -> 1) differs from the value as text (lib/moodlelib.php validate_param)."""
    if isinstance(value, bool) or value in (0, 1, "0", "1"):
        return bool(int(value))
    raise invalid_parameter(f"{where} => Invalid parameter value detected: Invalid external api parameter: the value is "
                            f"\"{value}\", the server was expecting \"bool\" type")


def _requests(params: Dict[str, Any], site: SiteConfig, outer: CallSettings) -> List[Request]:
    """validate_parameters(call_external_functions_parameters(), ['requests' => $requests])."""
    unexpected = sorted(set(params) - {"requests"})
    if unexpected:
        raise invalid_parameter(f"Unexpected keys ({', '.join(unexpected)}) detected in parameter array.")
    if "requests" not in params:
        raise invalid_parameter("Missing required key in single structure: requests")
    raw = params["requests"]
    if raw == "":  # `requests=` (PHP has a string there, not an array)
        raw = None
    if isinstance(raw, dict):  # external_multiple_structure takes the values whatever the keys (foreach)
        raw = list(raw.values())
    if not isinstance(raw, list):
        raise invalid_parameter(f"requests => Invalid parameter value detected: Only arrays accepted. The bad value is: "
                                f"'{raw if raw is not None else ''}'")
    out = []
    for i, item in enumerate(raw):
        where = f"requests => Invalid parameter value detected: {i}"
        if not isinstance(item, dict):
            raise invalid_parameter(f"{where} => Invalid parameter value detected: Only arrays accepted.")
        extra = [k for k in item if k not in _KEYS]
        if extra:
            raise invalid_parameter(f"{where} => Invalid parameter value detected: Unexpected keys ({', '.join(extra)}) "
                                    "detected in parameter array.")
        if "function" not in item:
            raise invalid_parameter(f"{where} => Invalid parameter value detected: Missing required key in single "
                                    "structure: function")
        function = item["function"]
        if not isinstance(function, str) or re.sub(r"[^a-zA-Z0-9_-]", "", function) != function:  # PARAM_ALPHANUMEXT
            raise invalid_parameter(f"{where} => Invalid parameter value detected: function => Invalid parameter value "
                                    f"detected: Invalid external api parameter: the value is \"{function}\", the server "
                                    "was expecting \"alphanumext\" type")
        arguments = item.get("arguments", "{}")
        if not isinstance(arguments, str):
            raise invalid_parameter(f"{where} => Invalid parameter value detected: arguments => Invalid parameter value "
                                    "detected: Scalar type expected, array or object received.")
        lang = item.get("settinglang", "")
        # PARAM_LANG cleans a language that is not installed to '', and validate_param then refuses it (the value
        # changed): unlike moodlewssettinglang, which optional_param silently cleans to ''
        if not isinstance(lang, str) or (lang and lang not in site.languages):
            raise invalid_parameter(f"{where} => Invalid parameter value detected: settinglang => Invalid parameter "
                                    f"value detected: Invalid external api parameter: the value is \"{lang}\", the "
                                    "server was expecting \"lang\" type")
        settings = CallSettings(raw=_bool(item.get("settingraw", False), f"{where} => settingraw"),
                                filter=_bool(item.get("settingfilter", False), f"{where} => settingfilter"),
                                fileurl=_bool(item.get("settingfileurl", True), f"{where} => settingfileurl"),
                                # $SESSION->lang = $request['settinglang'] ?: $defaultlang (current_language() when the
                                # batch began: the batch's own moodlewssettinglang, else the user's, else the site's)
                                lang=lang or outer.lang)
        out.append(Request(function, arguments, settings))
    return out


def _php_form(value: Any) -> Any:
    """A JSON-decoded argument as the same value posted as a form would reach the function: the emulator's functions
    read form values, and validate_parameters makes the two alike in PHP ((string)1 === '1', PARAM_BOOL's true/1)."""
    if isinstance(value, dict):
        return {str(k): _php_form(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_php_form(v) for v in value]
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _arguments(text: str) -> Dict[str, Any]:
    """$args = @json_decode($request['arguments'], true); if (!is_array($args)) $args = []; a JSON list is a PHP
    array too, keyed 0..n-1."""
    try:
        decoded = json.loads(text)
    except ValueError:
        return {}
    if isinstance(decoded, list):
        decoded = {str(i): v for i, v in enumerate(decoded)}
    if not isinstance(decoded, dict):
        return {}
    out = _php_form(decoded)
    assert isinstance(out, dict)
    return out


def call_external_functions(params: Dict[str, Any], site: SiteConfig, outer: CallSettings, service: Set[str],
                            subcall: SubCall, wwwroot: str, user_lang: str,
                            done: Callable[[str, Dict[str, Any]], None]) -> Dict[str, Any]:
    """The batch: `service` the functions of the token's service, `subcall` runs one function as a single call's
    function runs (the server's path: counted, faults, api.run), `done(function, args)` is told of every sub-call
    the server processed, in order."""
    responses: List[Dict[str, Any]] = []
    for request in _requests(params, site, outer):
        args = _arguments(request.arguments)
        response: Dict[str, Any]
        if request.function not in service:
            # "Function not included in the service, return an access exception."
            response = {"error": True, "exception": php_json({"errorcode": "accessexception", "module": "webservice"})}
        else:
            try:
                answer = subcall(request.function, args, request.settings)
                response = {"error": False, "data": php_json(answer)}
            except WSError as err:
                lang = request.settings.lang or user_lang or site.lang  # current_language() for get_docs_url()
                response = {"error": True, "exception": php_json(err.info(site, wwwroot, lang))}
        done(request.function, args)
        responses.append(response)
        if response["error"]:
            break  # "Do not process the remaining requests."
    return {"responses": responses}
