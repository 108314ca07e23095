"""Persistence commands: DUMP, RESTORE, SAVE, BGSAVE, LASTSAVE.

DUMP payloads are our own format, laid out like Redis's: the codec value encoding
(type byte + body), a 2-byte format version, then an 8-byte checksum
(blake2b-64 of everything before it). RESTORE refuses a payload whose version or
checksum does not match, with Redis's error text.
"""

from __future__ import annotations

import hashlib
import struct
from typing import TYPE_CHECKING, Any

from .. import resp
from ..codec import CodecError, decode_value, encode_value
from ..errors import BAD_DUMP, BUSYKEY, SYNTAX, CommandError, invalid_expire
from ..numbers import INT64_MAX, parse_int
from .table import CommandGroup

if TYPE_CHECKING:
    from ..connection import Connection

group = CommandGroup()
command = group.command

DUMP_VERSION = 1
_VERSION = struct.Struct("<H")
_TRAILER = _VERSION.size + 8

BGSAVE_IN_PROGRESS = "ERR Background save already in progress"
BAD_DATA = "ERR Bad data format"


# --------------------------------------------------------------------------- payloads


def _checksum(data: bytes | memoryview) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


def dump_payload(value: Any) -> bytes:
    """The DUMP serialization of ``value``."""
    body = encode_value(value) + _VERSION.pack(DUMP_VERSION)
    return body + _checksum(body)


def verify_payload(payload: bytes) -> bool:
    """True if ``payload`` carries our version and a matching checksum."""
    if len(payload) < 1 + _TRAILER:
        return False
    mv = memoryview(payload)
    if _VERSION.unpack_from(payload, len(payload) - _TRAILER)[0] != DUMP_VERSION:
        return False
    return _checksum(mv[:-8]) == payload[-8:]


def load_payload(payload: bytes) -> Any:
    """The value of a verified payload; raises CommandError for a bad one."""
    if not verify_payload(payload):
        raise CommandError(BAD_DUMP)
    try:
        return decode_value(memoryview(payload)[:-_TRAILER])
    except CodecError:
        raise CommandError(BAD_DATA) from None


# --------------------------------------------------------------------------- DUMP / RESTORE


@command("dump")
def dump(c: Connection, argv: list[bytes]) -> bytes:
    v = c.ks.get(argv[1])
    if v is None:
        return c.null
    return resp.bulk(dump_payload(v))


@command("restore")
def restore(c: Connection, argv: list[bytes]) -> bytes:
    key, raw_ttl, payload = argv[1], argv[2], argv[3]
    replace = absttl = False
    idle = freq = -1
    i = 4
    n = len(argv)
    while i < n:
        opt = argv[i].upper()
        more = n - i - 1
        if opt == b"REPLACE":
            replace = True
        elif opt == b"ABSTTL":
            absttl = True
        elif opt == b"IDLETIME" and more >= 1 and freq == -1:
            idle = parse_int(argv[i + 1])
            if idle < 0:
                raise CommandError("ERR Invalid IDLETIME value, must be >= 0")
            i += 1
        elif opt == b"FREQ" and more >= 1 and idle == -1:
            freq = parse_int(argv[i + 1])
            if freq < 0 or freq > 255:
                raise CommandError("ERR Invalid FREQ value, must be >= 0 and <= 255")
            i += 1
        else:
            raise CommandError(SYNTAX)
        i += 1
    ks = c.ks
    if not replace and ks.get_for_write(key) is not None:
        raise CommandError(BUSYKEY)
    ttl = parse_int(raw_ttl)
    if ttl < 0:
        raise CommandError("ERR Invalid TTL value, must be >= 0")
    value = load_payload(payload)
    deleted = ks.delete(key) if replace else False
    at = 0
    if ttl:
        now = ks.clock()
        at = ttl if absttl else now + ttl
        if at > INT64_MAX:
            raise CommandError(invalid_expire("restore"))
        if at <= now:
            # Already expired: the key is not created (an old one was replaced away).
            c.effects = [[b"DEL", key]] if deleted else []
            return resp.OK
    ks.set(key, value)
    if at:
        ks.set_expire(key, at)
    # Replicas get an absolute TTL, so they expire the key at the same moment.
    c.effects = [[b"RESTORE", key, b"%d" % at, payload, b"REPLACE", b"ABSTTL"]]
    return resp.OK


# --------------------------------------------------------------------------- snapshots


@command("save")
def save(c: Connection, argv: list[bytes]) -> bytes:
    snaps = c.server.snapshots
    if snaps.in_progress:
        raise CommandError(BGSAVE_IN_PROGRESS)
    try:
        snaps.save()
    except Exception as exc:  # noqa: BLE001 - the reply says why
        raise CommandError(f"ERR {exc}") from None
    return resp.OK


@command("bgsave")
def bgsave(c: Connection, argv: list[bytes]) -> bytes:
    schedule = False
    if len(argv) > 1:
        if len(argv) == 2 and argv[1].upper() == b"SCHEDULE":
            schedule = True
        else:
            raise CommandError(SYNTAX)
    snaps = c.server.snapshots
    if snaps.in_progress:
        if schedule:
            snaps.scheduled = True
            return resp.simple(b"Background saving scheduled")
        raise CommandError(BGSAVE_IN_PROGRESS)
    if not snaps.bgsave():
        raise CommandError("ERR Background save failed to start: see the node's log")
    return resp.simple(b"Background saving started")


@command("lastsave")
def lastsave(c: Connection, argv: list[bytes]) -> bytes:
    return resp.integer(c.server.snapshots.last_save)
