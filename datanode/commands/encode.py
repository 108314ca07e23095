"""Fast reply encoders for collection commands (hashes, lists, sets, sorted sets).

Same wire format as :mod:`datanode.resp`, tuned for many elements: bulk headers come
from a table and parts are joined once (LRANGE_600 encodes 600 bulks per call).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .. import resp

_HDR_MAX = 4096
_HDR = [b"$%d\r\n" % i for i in range(_HDR_MAX)]
_CRLF = b"\r\n"
_EMPTY_SET3 = b"~0\r\n"
_EMPTY_MAP3 = b"%0\r\n"
EMPTY_ARRAY = resp.EMPTY_ARRAY


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def _slow_bulks(head: bytes, items: Iterable[bytes]) -> bytes:
    return head + b"".join([b"$%d\r\n%b\r\n" % (len(x), x) for x in items])


def bulks(head: bytes, items: Sequence[bytes]) -> bytes:
    """``head`` followed by each item as a bulk string."""
    out = [head]
    ext = out.extend
    hdr = _HDR
    try:
        for x in items:
            ext((hdr[len(x)], x, _CRLF))
    except IndexError:  # an item longer than the header table
        return _slow_bulks(head, items)
    return b"".join(out)


def bulk_array(items: Sequence[bytes]) -> bytes:
    """An array of bulk strings (``items`` must support len() and re-iteration)."""
    return bulks(b"*%d\r\n" % len(items), items)


def bulk_set(items: Sequence[bytes], resp3: bool) -> bytes:
    """A RESP3 set (``~``) or a RESP2 array of bulk strings."""
    return bulks((b"~%d\r\n" if resp3 else b"*%d\r\n") % len(items), items)


def empty_set(resp3: bool) -> bytes:
    return _EMPTY_SET3 if resp3 else EMPTY_ARRAY


def empty_map(resp3: bool) -> bytes:
    return _EMPTY_MAP3 if resp3 else EMPTY_ARRAY


def bulk_map(flat: Sequence[bytes], resp3: bool) -> bytes:
    """A map from a flat ``[k1, v1, k2, v2, …]`` list (RESP2: that flat array)."""
    n = len(flat)
    return bulks(b"%%%d\r\n" % (n // 2) if resp3 else b"*%d\r\n" % n, flat)


def pair_array(flat: Sequence[bytes], resp3: bool) -> bytes:
    """Pairs from a flat ``[a1, b1, a2, b2, …]`` list: RESP3 an array of 2-arrays,
    RESP2 the flat array (HRANDFIELD … WITHVALUES)."""
    n = len(flat)
    if not resp3:
        return bulks(b"*%d\r\n" % n, flat)
    out = [b"*%d\r\n" % (n // 2)]
    ap = out.append
    for i in range(0, n, 2):
        a = flat[i]
        b = flat[i + 1]
        ap(b"*2\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(a), a, len(b), b))
    return b"".join(out)
