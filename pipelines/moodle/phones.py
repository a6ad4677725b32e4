"""Phone numbers as people type them, to E.164 for SMS, with Google's libphonenumber."""

from __future__ import annotations

from typing import Optional

import phonenumbers


def to_e164(raw: Optional[str], region: Optional[str]) -> Optional[str]:
    """`+2547...` for a valid number, None for an empty, unparseable or impossible one.

    A number typed without a country code is read in `region` (the user's Moodle country); one typed with
    the country code but no plus (254712...) is recognised too.
    """
    if raw is None or not str(raw).strip():
        return None
    region = (region or "").strip().upper() or None
    try:
        number = phonenumbers.parse(str(raw), region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
