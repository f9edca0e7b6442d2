"""Lambda's layer-version ARNs and whole numbers from outside data, checked strictly (ASCII only)."""

from __future__ import annotations

import re

# Lambda's layer-version ARN (ASCII only: re.ASCII keeps [0-9] and friends from matching other scripts).
LAYER_VERSION_ARN = re.compile(
    r"arn:aws[a-z-]*:lambda:[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}:[0-9]{12}:layer:[A-Za-z0-9_-]{1,140}:[0-9]{1,9}", re.ASCII)
_DIGITS = re.compile(r"[0-9]{1,9}", re.ASCII)


def ascii_int(value) -> int | None:
    """A whole number from outside data: an int, or a string of ASCII digits; None for anything else.

    int() alone accepts '²', '٣' or ' 7 ' (and then fails or lies); this accepts only [0-9].
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    return None


def valid_layer_arn(arn) -> bool:
    """True for a Lambda layer-version ARN (arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION)."""
    return isinstance(arn, str) and LAYER_VERSION_ARN.fullmatch(arn) is not None
