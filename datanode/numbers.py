"""Strict number parsing and formatting, with Redis's rules.

Python's ``int()`` and ``float()`` accept spaces, ``+``, underscores and ``nan``;
Redis does not, so every handler parses arguments through these.
"""

from __future__ import annotations

import math
from decimal import Decimal

from .errors import NOT_FLOAT, NOT_INTEGER, CommandError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def parse_int(raw: bytes, message: str = NOT_INTEGER) -> int:
    """A signed 64-bit integer written as Redis's ``string2ll`` accepts it."""
    digits = raw[1:] if raw[:1] == b"-" else raw
    if not digits.isdigit() or (digits[0] == 48 and len(digits) > 1) or len(digits) > 20:
        raise CommandError(message)
    if raw == b"-0":
        raise CommandError(message)
    value = int(raw)
    if value < INT64_MIN or value > INT64_MAX:
        raise CommandError(message)
    return value


def parse_float(raw: bytes, message: str = NOT_FLOAT, allow_inf: bool = True) -> float:
    """A double as Redis's ``strtold`` accepts it: no spaces, no NaN."""
    if raw.isdigit() and len(raw) < 16:  # the common case: a plain small integer
        return float(raw)
    if not raw or raw[0] in b" \t\r\n" or raw[-1] in b" \t\r\n" or b"_" in raw:
        raise CommandError(message)
    try:
        value = float(raw)
    except ValueError:
        raise CommandError(message) from None
    if math.isnan(value) or (not allow_inf and math.isinf(value)):
        raise CommandError(message)
    return value


def format_float(value: float) -> bytes:
    """Human form, as INCRBYFLOAT and HINCRBYFLOAT reply: no exponent, no trailing zeros."""
    if math.isinf(value):
        return b"inf" if value > 0 else b"-inf"
    if value.is_integer() and abs(value) < 1e17:
        return b"%d" % int(value)
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text.encode()
