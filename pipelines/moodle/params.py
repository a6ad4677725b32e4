"""PHP-style form encoding of web-service arguments.

Moodle's REST server reads `$_POST` as PHP parses it, so lists and structs must be flattened to
`values[0]=..`, `options[0][name]=..`, `options[ids][0]=..`. No library does this for PHP's dialect.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Tuple


def encode_params(params: Mapping[str, Any]) -> List[Tuple[str, str]]:
    """Flatten nested dicts and lists into PHP bracket pairs, keeping order.

    `None` values are left out (Moodle then applies its default); booleans become 1/0 as PHP expects.
    """
    pairs: List[Tuple[str, str]] = []

    def walk(key: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, Mapping):
            for sub_key, sub_value in value.items():
                walk(f"{key}[{sub_key}]", sub_value)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                walk(f"{key}[{index}]", item)
        elif isinstance(value, bool):
            pairs.append((key, "1" if value else "0"))
        else:
            pairs.append((key, str(value)))

    for name, value in params.items():
        walk(str(name), value)
    return pairs


def options_list(**options: Any) -> List[dict]:
    """The `options[i][name]/[value]` list that enrol and course functions take."""
    return [{"name": name, "value": value} for name, value in options.items() if value is not None]
