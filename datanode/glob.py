"""Redis's glob-style patterns (``stringmatchlen``) compiled to a match function.

``compile_glob(pattern)`` returns ``match(subject) -> bool``, with Redis's rules:

* ``*`` any run of bytes, ``?`` one byte, ``\\x`` the byte ``x`` literally;
* ``[abc]`` one of, ``[^abc]`` none of, ``[a-z]`` a range (ends may be given in
  either order), ``\\`` escapes inside a class; a class left open runs to the end
  of the pattern; ``[]`` matches nothing and ``[^]`` any byte;
* a lone ``\\`` at the very end is a literal backslash;
* bytes, case-sensitive.

One Redis quirk is kept: an empty subject matches only the empty pattern, except
that the match-everything pattern ``*`` (which KEYS and SCAN special-case in Redis
too) matches everything, the empty string included.

The pattern becomes a bytes regex; each ``*`` between literal parts is an atomic
lazy group, so a pattern never backtracks exponentially (as Redis's
``skipLongerMatches`` does). Redis's nesting limit (a pattern with more than 1000
``*`` runs matches nothing) is not reproduced.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["compile_glob", "is_match_all"]

_SPECIAL = frozenset(b"*?[\\")
_STAR = object()


def _true(_: bytes) -> bool:
    return True


def is_match_all(pattern: bytes) -> bool:
    """True for the pattern ``*`` (Redis skips matching altogether for it)."""
    return pattern == b"*"


def compile_glob(pattern: bytes) -> Callable[[bytes], bool]:
    """A function telling whether a subject matches the Redis glob ``pattern``."""
    if pattern == b"*":
        return _true
    if not _SPECIAL.intersection(pattern):
        return pattern.__eq__  # type: ignore[return-value]
    body = pattern[:-1]
    if pattern[-1:] == b"*" and body and not _SPECIAL.intersection(body):
        prefix = body

        def starts(subject: bytes) -> bool:
            return subject.startswith(prefix)

        return starts
    fullmatch = re.compile(_translate(pattern), re.DOTALL).fullmatch

    def match(subject: bytes) -> bool:
        # Redis never matches an empty subject against a non-empty pattern.
        return bool(subject) and fullmatch(subject) is not None

    return match


def _class(members: set[int], negate: bool) -> bytes:
    if negate:
        members = set(range(256)) - members
    if not members:
        return b"(?!)"
    if len(members) == 256:
        return b"."
    parts = [b"["]
    values = sorted(members)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(b"\\x%02x" % values[i])
        if j > i:
            parts.append(b"-\\x%02x" % values[j])
        i = j + 1
    parts.append(b"]")
    return b"".join(parts)


def _tokens(p: bytes) -> list[object]:
    """The pattern as a list of regex pieces (bytes) and _STAR markers."""
    out: list[object] = []
    n = len(p)
    i = 0
    while i < n:
        ch = p[i]
        if ch == 42:  # '*'
            while i + 1 < n and p[i + 1] == 42:
                i += 1
            out.append(_STAR)
        elif ch == 63:  # '?'
            out.append(b".")
        elif ch == 91:  # '['
            i += 1
            negate = i < n and p[i] == 94  # '^'
            if negate:
                i += 1
            members: set[int] = set()
            while True:
                if i >= n:  # unterminated: the class runs to the end of the pattern
                    break
                c = p[i]
                if c == 92 and n - i >= 2:  # '\\' escape
                    i += 1
                    members.add(p[i])
                elif c == 93:  # ']'
                    break
                elif n - i >= 3 and p[i + 1] == 45:  # 'a-z'
                    lo, hi = c, p[i + 2]
                    if lo > hi:
                        lo, hi = hi, lo
                    members.update(range(lo, hi + 1))
                    i += 2
                else:
                    members.add(c)
                i += 1
            out.append(_class(members, negate))
        elif ch == 92 and n - i >= 2:  # '\\x'
            i += 1
            out.append(re.escape(p[i : i + 1]))
        else:
            out.append(re.escape(p[i : i + 1]))
        i += 1
    return out


def _translate(pattern: bytes) -> bytes:
    tokens = _tokens(pattern)
    parts: list[bytes] = []
    n = len(tokens)
    i = 0
    while i < n and tokens[i] is not _STAR:
        parts.append(tokens[i])  # type: ignore[arg-type]
        i += 1
    # Each interior "* fixed" is a lazy atomic group: the first place where the fixed
    # part matches is the right one (globs need no backtracking into it).
    while i < n:
        i += 1  # the star
        fixed: list[bytes] = []
        while i < n and tokens[i] is not _STAR:
            fixed.append(tokens[i])  # type: ignore[arg-type]
            i += 1
        if i == n:
            parts.append(b".*")
            parts.extend(fixed)
        else:
            parts.append(b"(?>.*?" + b"".join(fixed) + b")")
    return b"".join(parts)
