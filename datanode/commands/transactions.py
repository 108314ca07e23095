"""MULTI, EXEC, DISCARD, WATCH, UNWATCH."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import resp
from ..errors import (
    DISCARD_WITHOUT_MULTI,
    EXEC_WITHOUT_MULTI,
    EXECABORT,
    MULTI_NESTED,
    WATCH_IN_MULTI,
    CommandError,
)
from .table import CommandGroup

if TYPE_CHECKING:
    from ..connection import Connection

group = CommandGroup()
command = group.command


@command("multi")
def multi(c: Connection, argv: list[bytes]) -> bytes:
    if c.multi is not None:
        raise CommandError(MULTI_NESTED)
    c.multi = []
    c.multi_failed = False
    return resp.OK


@command("exec")
def exec_(c: Connection, argv: list[bytes]) -> bytes:
    queued = c.multi
    if queued is None:
        raise CommandError(EXEC_WITHOUT_MULTI)
    failed = c.multi_failed
    c.multi = None
    c.multi_failed = False
    dirty = c.dirty
    c.unwatch_all()
    if failed:
        raise CommandError(EXECABORT)
    if dirty:
        return resp.null_array(c.resp3)
    return c.server.run_transaction(c, queued)


@command("discard")
def discard(c: Connection, argv: list[bytes]) -> bytes:
    if c.multi is None:
        raise CommandError(DISCARD_WITHOUT_MULTI)
    c.multi = None
    c.multi_failed = False
    c.unwatch_all()
    return resp.OK


@command("watch")
def watch(c: Connection, argv: list[bytes]) -> bytes:
    if c.multi is not None:
        raise CommandError(WATCH_IN_MULTI)
    for key in argv[1:]:
        c.watch(key)
    return resp.OK


@command("unwatch")
def unwatch(c: Connection, argv: list[bytes]) -> bytes:
    c.unwatch_all()
    return resp.OK
