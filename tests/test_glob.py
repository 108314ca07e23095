"""datanode.glob: Redis's glob patterns (pure; checked against a port of stringmatchlen)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datanode.glob import compile_glob, is_match_all


def redis_stringmatch(p: bytes, s: bytes) -> bool:
    """A line-by-line port of Redis 7.0's stringmatchlen (case-sensitive), as reference.

    C reads a NUL past the end of the pattern; ``at`` returns 0 there likewise.
    """

    def at(buf: bytes, i: int) -> int:
        return buf[i] if i < len(buf) else 0

    def match(pi: int, plen: int, si: int, slen: int, skip: list[bool]) -> bool:
        while plen and slen:
            ch = p[pi]
            if ch == ord("*"):
                while plen and at(p, pi + 1) == ord("*"):
                    pi += 1
                    plen -= 1
                if plen == 1:
                    return True
                while slen:
                    if match(pi + 1, plen - 1, si, slen, skip):
                        return True
                    if skip[0]:
                        return False
                    si += 1
                    slen -= 1
                skip[0] = True
                return False
            elif ch == ord("?"):
                si += 1
                slen -= 1
            elif ch == ord("["):
                pi += 1
                plen -= 1
                negate = at(p, pi) == ord("^")
                if negate:
                    pi += 1
                    plen -= 1
                matched = False
                while True:
                    if at(p, pi) == ord("\\") and plen >= 2:
                        pi += 1
                        plen -= 1
                        if p[pi] == s[si]:
                            matched = True
                    elif at(p, pi) == ord("]"):
                        break
                    elif plen == 0:
                        pi -= 1
                        plen += 1
                        break
                    elif plen >= 3 and at(p, pi + 1) == ord("-"):
                        start, end = p[pi], p[pi + 2]
                        if start > end:
                            start, end = end, start
                        pi += 2
                        plen -= 2
                        if start <= s[si] <= end:
                            matched = True
                    elif p[pi] == s[si]:
                        matched = True
                    pi += 1
                    plen -= 1
                if negate:
                    matched = not matched
                if not matched:
                    return False
                si += 1
                slen -= 1
            else:
                if ch == ord("\\") and plen >= 2:
                    pi += 1
                    plen -= 1
                if p[pi] != s[si]:
                    return False
                si += 1
                slen -= 1
            pi += 1
            plen -= 1
            if slen == 0:
                while at(p, pi) == ord("*"):
                    pi += 1
                    plen -= 1
                break
        return plen == 0 and slen == 0

    return match(0, len(p), 0, len(s), [False])


def reference(pattern: bytes, subject: bytes) -> bool:
    # KEYS/SCAN skip matching for "*" (so it also matches the empty key).
    return True if pattern == b"*" else redis_stringmatch(pattern, subject)


CASES = [
    (b"*", b"", True),
    (b"*", b"anything", True),
    (b"", b"", True),
    (b"", b"a", False),
    (b"**", b"", False),
    (b"?", b"", False),
    (b"a*", b"a", True),
    (b"a*", b"abc", True),
    (b"a*", b"ba", False),
    (b"*a", b"ba", True),
    (b"*a*b*c", b"xaxbxc", True),
    (b"*a*b*c", b"xaxcxb", False),
    (b"h?llo", b"hello", True),
    (b"h?llo", b"hllo", False),
    (b"h[ae]llo", b"hallo", True),
    (b"h[ae]llo", b"hillo", False),
    (b"h[^e]llo", b"hallo", True),
    (b"h[^e]llo", b"hello", False),
    (b"h[a-b]llo", b"hbllo", True),
    (b"h[b-a]llo", b"hbllo", True),  # reversed range
    (b"h[a-b]llo", b"hcllo", False),
    (b"\\*", b"*", True),
    (b"\\*", b"a", False),
    (b"a\\", b"a\\", True),  # lone trailing backslash is literal
    (b"[\\]]", b"]", True),
    (b"[]", b"a", False),  # empty class matches nothing
    (b"[^]", b"a", True),  # negated empty class matches anything
    (b"[abc", b"b", True),  # an open class runs to the end
    (b"[a-]", b"_", True),  # range from ']' to 'a'
    (b"key:*", b"key:1", True),
    (b"key:*", b"kex:1", False),
    (b"plain", b"plain", True),
    (b"plain", b"plainer", False),
    (b"a.c", b"abc", False),  # regex specials are literal
    (b"(x)+", b"(x)+", True),
    (b"*\n", b"line\n", True),  # '*' spans any byte, newlines included
    (b"?", b"\xff", True),
]


@pytest.mark.parametrize("pattern,subject,expected", CASES)
def test_cases(pattern: bytes, subject: bytes, expected: bool) -> None:
    assert compile_glob(pattern)(subject) is expected
    assert reference(pattern, subject) is expected


def test_match_all() -> None:
    assert is_match_all(b"*")
    assert not is_match_all(b"**")


_ALPHABET = b"ab-]^[\\*?c"


@settings(max_examples=3000, deadline=None)
@given(
    st.binary(min_size=0, max_size=8).map(lambda b: bytes(_ALPHABET[x % len(_ALPHABET)] for x in b)),
    st.binary(min_size=0, max_size=8).map(lambda b: bytes(_ALPHABET[x % len(_ALPHABET)] for x in b)),
)
def test_same_as_redis(pattern: bytes, subject: bytes) -> None:
    assert compile_glob(pattern)(subject) == reference(pattern, subject)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=6), st.binary(max_size=10))
def test_same_as_redis_any_bytes(pattern: bytes, subject: bytes) -> None:
    assert compile_glob(pattern)(subject) == reference(pattern, subject)


def test_no_catastrophic_backtracking() -> None:
    match = compile_glob(b"*a*a*a*a*a*a*a*a*a*b")
    t0 = time.perf_counter()
    assert not match(b"a" * 50_000)
    assert time.perf_counter() - t0 < 1.0
