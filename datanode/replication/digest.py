"""An order-independent digest of a whole keyspace (``SLOTKEEPER DIGEST``).

Every stored key counts, logically expired or not (a replica keeps expired keys
until its primary deletes them, so "what is stored" is what must match), with its
absolute expiry time. Per key: BLAKE2b-128 over the type, the key, a canonical
encoding of the value (sets and hashes sorted, so their in-memory order does not
matter) and the deadline; the keyspace digest is the sum of those numbers modulo
2**128, so neither slot order nor insertion order changes it. Equal on a primary
and its replicas once they have applied the same stream offset.
"""

from __future__ import annotations

import struct
from collections import deque
from hashlib import blake2b
from typing import Any

from ..codec import encode_value
from ..zset import ZSet

_MASK = (1 << 128) - 1
_HEAD = struct.Struct("<Iq")  # key length, expiry (unix ms, -1: none)


def _canonical(value: Any) -> bytes:
    t = type(value)
    if t is bytes:
        return b"s" + value
    if t is deque:
        return b"l" + encode_value(value)
    if t is set:
        return b"S" + encode_value(deque(sorted(value)))
    if t is dict:
        return b"h" + encode_value(dict(sorted(value.items())))
    if t is ZSet:
        return b"z" + encode_value(value)
    raise TypeError(f"cannot digest a value of type {t.__name__}")


def keyspace_digest(ks: Any) -> tuple[str, int]:
    """``(32 hex chars, keys counted)``; ``"0" * 32`` for an empty keyspace."""
    total = 0
    count = 0
    get_at = ks.expires.get
    from_bytes = int.from_bytes
    pack = _HEAD.pack
    for d in (ks.data,):
        if not d:
            continue
        count += len(d)
        for key, value in d.items():
            body = b"s" + value if type(value) is bytes else _canonical(value)
            h = blake2b(pack(len(key), get_at(key, -1)) + key + body, digest_size=16)
            total += from_bytes(h.digest(), "little")
    return f"{total & _MASK:032x}", count
