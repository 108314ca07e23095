"""SLOTKEEPER slot-transfer subcommands (admin port only).

IMPORT, IMPORT-STATUS, IMPORT-HANDOFF, IMPORT-CANCEL, IMPORTING (target side); EXPORT, HANDOFF,
MIGRATE-ABORT, MIGRATING, DROPSLOTS (source side). The protocol and its
guarantees are described in :mod:`datanode.transfer`; these handlers only parse
arguments and encode replies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import resp
from ..errors import SYNTAX, CommandError
from ..identity import is_node_id
from ..numbers import parse_int
from ..transfer import (
    BATCH_KEYS,
    IDLE_TIMEOUT,
    MAX_BATCH_KEYS,
    parse_slots,
    transfers_of,
)
from .admin import admin_only
from .table import CommandGroup

if TYPE_CHECKING:
    from ..connection import Connection

group = CommandGroup()


def _meta(arity: int) -> dict[str, Any]:
    return {"arity": arity, "flags": ("admin", "noscript", "loading", "stale"),
            "keys": (0, 0, 0), "acl": ("@admin", "@slow", "@dangerous")}


def _node_id(raw: bytes, what: str) -> str:
    text = raw.decode("latin-1")
    if not is_node_id(text):
        raise CommandError(f"ERR invalid {what} node id {text[:64]!r}: expected 40 lowercase hex")
    return text


def _options(argv: Sequence[bytes], start: int, allowed: tuple[bytes, ...]) -> dict[bytes, int]:
    """``NAME n`` pairs after ``start`` (names from ``allowed``), as positive integers."""
    out: dict[bytes, int] = {}
    if (len(argv) - start) % 2:
        raise CommandError(SYNTAX)
    for i in range(start, len(argv), 2):
        name = argv[i].upper()
        if name not in allowed:
            raise CommandError(SYNTAX)
        value = parse_int(argv[i + 1])
        if value <= 0:
            raise CommandError(f"ERR {name.decode()} must be positive")
        out[name] = value
    return out


def _batch(opts: Mapping[bytes, int]) -> int:
    batch = opts.get(b"BATCH", BATCH_KEYS)
    if batch > MAX_BATCH_KEYS:
        raise CommandError(f"ERR BATCH must be at most {MAX_BATCH_KEYS}")
    return batch


def _marks(c: Connection, marks: Mapping[int, str]) -> bytes:
    return resp.map_of(
        [(resp.integer(s), resp.bulk(marks[s].encode())) for s in sorted(marks)], c.resp3
    )


def _status_reply(c: Connection, pairs: Sequence[tuple[bytes, bytes | int]]) -> bytes:
    return resp.map_of(
        [(resp.bulk(k), resp.integer(v) if isinstance(v, int) else resp.bulk(v)) for k, v in pairs],
        c.resp3,
    )


# ------------------------------------------------------------------ target side


@group.subcommand("slotkeeper", "import", meta=_meta(-6))
def import_(c: Connection, argv: list[bytes]) -> bytes:
    """IMPORT <source-host> <source-admin-port> <source-node-id> <ranges> [BATCH n]
    [TIMEOUT ms] [TAKEOVER]"""
    admin_only(c)
    host = argv[2].decode("latin-1")
    port = parse_int(argv[3])
    if not 0 < port < 65536:
        raise CommandError("ERR invalid source port")
    source = _node_id(argv[4], "source")
    slots = parse_slots(argv[5])
    rest = argv[6:]
    takeover = bool(rest) and rest[-1].upper() == b"TAKEOVER"
    opts = _options(argv[:-1] if takeover else argv, 6, (b"BATCH", b"TIMEOUT"))
    timeout = opts.get(b"TIMEOUT", int(IDLE_TIMEOUT * 1000)) / 1000
    transfers_of(c.server).start_import(host, port, source, slots, _batch(opts), timeout,
                                        takeover)
    return resp.OK


@group.subcommand("slotkeeper", "import-status", meta=_meta(-2))
def import_status(c: Connection, argv: list[bytes]) -> bytes:
    """IMPORT-STATUS [<ranges>] [WAIT ms]: with WAIT, a running import answers
    when it ends or after ``ms`` (so a driver learns the end at once without polling)."""
    admin_only(c)
    args = argv[2:]
    wait_ms = 0
    if len(args) >= 2 and args[-2].upper() == b"WAIT":
        wait_ms = parse_int(args[-1])
        if wait_ms < 0:
            raise CommandError("ERR WAIT must not be negative")
        args = args[:-2]
    if len(args) > 1:
        raise CommandError(SYNTAX)
    slots = parse_slots(args[0]) if args else None
    transfers = transfers_of(c.server)
    if wait_ms and c.multi is None and not c.in_exec:
        im = transfers.find(slots)
        if im is not None and im.state == "running":
            return transfers.wait_end(c, im, wait_ms, lambda pairs: _status_reply(c, pairs))
    return _status_reply(c, transfers.status(slots))


@group.subcommand("slotkeeper", "import-handoff", meta=_meta(3))
def import_handoff(c: Connection, argv: list[bytes]) -> bytes:
    """IMPORT-HANDOFF <ranges>: serve completely imported slots before the topology."""
    admin_only(c)
    return resp.integer(transfers_of(c.server).adopt(parse_slots(argv[2])))


@group.subcommand("slotkeeper", "import-cancel", meta=_meta(-2))
def import_cancel(c: Connection, argv: list[bytes]) -> bytes:
    """IMPORT-CANCEL [<ranges>]"""
    admin_only(c)
    if len(argv) > 3:
        raise CommandError(SYNTAX)
    slots = parse_slots(argv[2]) if len(argv) == 3 else None
    return resp.integer(transfers_of(c.server).cancel_imports(slots))


@group.subcommand("slotkeeper", "importing", meta=_meta(2))
def importing(c: Connection, argv: list[bytes]) -> bytes:
    admin_only(c)
    return _marks(c, c.server.importing)


# ------------------------------------------------------------------ source side


@group.subcommand("slotkeeper", "export", meta=_meta(-4))
def export(c: Connection, argv: list[bytes]) -> bytes:
    """EXPORT <ranges> <target-node-id> [BATCH n] [EPOCH e]: the stream follows on this
    connection. ``EPOCH``: the target's view epoch (lets a newer EXPORT replace a
    stale mark, and later views drop marks they show stale)."""
    admin_only(c)
    slots = parse_slots(argv[2])
    target = _node_id(argv[3], "target")
    opts = _options(argv, 4, (b"BATCH", b"EPOCH"))
    if c.multi is not None or c.in_exec:
        raise CommandError("ERR SLOTKEEPER EXPORT is not allowed in a transaction")
    transfers_of(c.server).start_export(c, slots, target, _batch(opts), opts.get(b"EPOCH", 0))
    return b""  # the exporter task writes the stream


@group.subcommand("slotkeeper", "migrate-abort", meta=_meta(-3))
def migrate_abort(c: Connection, argv: list[bytes]) -> bytes:
    """MIGRATE-ABORT <ranges> [<target-node-id>]"""
    admin_only(c)
    if len(argv) > 4:
        raise CommandError(SYNTAX)
    slots = parse_slots(argv[2])
    target = _node_id(argv[3], "target") if len(argv) == 4 else None
    return resp.integer(transfers_of(c.server).abort_migration(slots, target))


@group.subcommand("slotkeeper", "handoff", meta=_meta(4))
def handoff(c: Connection, argv: list[bytes]) -> bytes:
    """HANDOFF <ranges> <target-node-id>: the slots' copy is complete and recorded;
    answer MOVED to the target for them until the topology moves them."""
    admin_only(c)
    slots = parse_slots(argv[2])
    target = _node_id(argv[3], "target")
    return resp.integer(transfers_of(c.server).handoff(slots, target))


@group.subcommand("slotkeeper", "migrating", meta=_meta(2))
def migrating(c: Connection, argv: list[bytes]) -> bytes:
    admin_only(c)
    return _marks(c, c.server.migrating)


@group.subcommand("slotkeeper", "transfer-windows", meta=_meta(-2))
def transfer_windows(c: Connection, argv: list[bytes]) -> bytes:
    """TRANSFER-WINDOWS [RESET]: how long writes were refused per move (µs)."""
    admin_only(c)
    if len(argv) > 3 or (len(argv) == 3 and argv[2].upper() != b"RESET"):
        raise CommandError(SYNTAX)
    windows = transfers_of(c.server).windows
    out = resp.array([resp.integer(w) for w in windows])
    if len(argv) == 3:
        windows.clear()
    return out


@group.subcommand("slotkeeper", "dropslots", meta=_meta(3))
def dropslots(c: Connection, argv: list[bytes]) -> bytes:
    """DROPSLOTS <ranges>: background delete of slots that belong elsewhere."""
    admin_only(c)
    return resp.integer(transfers_of(c.server).drop(parse_slots(argv[2])))
