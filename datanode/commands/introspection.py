"""COMMAND and its subcommands: the table described in Redis's own format."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import resp
from ..errors import CommandError
from .table import CommandGroup, CommandSpec

if TYPE_CHECKING:
    from ..connection import Connection

group = CommandGroup()


def _simple_set(items: tuple[str, ...], resp3: bool) -> bytes:
    return resp.set_of([b"+" + i.encode() + b"\r\n" for i in items], resp3)


def _key_specs(spec: CommandSpec, resp3: bool) -> bytes:
    if spec.first_key <= 0:
        return resp.set_of([], resp3)
    last = spec.last_key - spec.first_key if spec.last_key >= 0 else spec.last_key
    begin = resp.map_of(
        [
            (resp.bulk(b"type"), resp.bulk(b"index")),
            (resp.bulk(b"spec"), resp.map_of([(resp.bulk(b"index"), b":%d\r\n" % spec.first_key)], resp3)),
        ],
        resp3,
    )
    find = resp.map_of(
        [
            (resp.bulk(b"type"), resp.bulk(b"range")),
            (
                resp.bulk(b"spec"),
                resp.map_of(
                    [
                        (resp.bulk(b"lastkey"), b":%d\r\n" % last),
                        (resp.bulk(b"keystep"), b":%d\r\n" % spec.step),
                        (resp.bulk(b"limit"), resp.ZERO),
                    ],
                    resp3,
                ),
            ),
        ],
        resp3,
    )
    one = resp.map_of(
        [
            (resp.bulk(b"flags"), resp.set_of([], resp3)),
            (resp.bulk(b"begin_search"), begin),
            (resp.bulk(b"find_keys"), find),
        ],
        resp3,
    )
    return resp.set_of([one], resp3)


def command_entry(spec: CommandSpec, resp3: bool) -> bytes:
    """One 10-element COMMAND entry, as Redis 7 lays it out."""
    return resp.array(
        [
            resp.bulk(spec.name.encode()),
            b":%d\r\n" % spec.arity,
            _simple_set(spec.flags, resp3),
            b":%d\r\n" % spec.first_key,
            b":%d\r\n" % spec.last_key,
            b":%d\r\n" % spec.step,
            _simple_set(spec.acl, resp3),
            resp.bulk_set([t.encode() for t in spec.tips], resp3),
            _key_specs(spec, resp3),
            resp.set_of([command_entry(s, resp3) for s in spec.subcommands.values()], resp3),
        ]
    )


def _specs(c: Connection) -> list[CommandSpec]:
    seen: dict[str, CommandSpec] = {}
    for spec in c.table.values():
        seen.setdefault(spec.name, spec)
    return list(seen.values())


def _find(c: Connection, name: bytes) -> CommandSpec | None:
    spec = c.table.get(name.lower())
    if spec is not None:
        return spec
    parent, _, sub = name.lower().partition(b"|")
    spec = c.table.get(parent)
    if spec is not None and sub:
        return spec.subcommands.get(sub.decode("latin-1"))
    return None


@group.command("command")
def command(c: Connection, argv: list[bytes]) -> bytes:
    if len(argv) > 1:
        return _sub(c, argv)
    return resp.array([command_entry(s, c.resp3) for s in _specs(c)])


def _sub(c: Connection, argv: list[bytes]) -> bytes:
    sub = argv[1].lower()
    if sub == b"count" and len(argv) == 2:
        return resp.integer(len(_specs(c)))
    if sub == b"info":
        if len(argv) == 2:
            return resp.array([command_entry(s, c.resp3) for s in _specs(c)])
        out = []
        for name in argv[2:]:
            spec = _find(c, name)
            out.append(c.null if spec is None else command_entry(spec, c.resp3))
        return resp.array(out)
    if sub == b"list" and len(argv) == 2:
        return resp.bulk_array([s.name.encode() for s in _specs(c)])
    if sub == b"docs":
        names = argv[2:] or [s.name.encode() for s in _specs(c)]
        pairs = []
        for name in names:
            spec = _find(c, name)
            if spec is None:
                continue
            doc = resp.map_of(
                [
                    (resp.bulk(b"summary"), resp.bulk(b"")),
                    (resp.bulk(b"since"), resp.bulk(b"1.0.0")),
                    (resp.bulk(b"group"), resp.bulk(_group_of(spec))),
                ],
                c.resp3,
            )
            pairs.append((resp.bulk(spec.name.encode()), doc))
        return resp.map_of(pairs, c.resp3)
    if sub == b"getkeys" and len(argv) >= 3:
        spec = _find(c, argv[2])
        if spec is None:
            raise CommandError("ERR Invalid command specified")
        args = argv[2:]
        if spec.fail_arity(args):
            raise CommandError("ERR Invalid number of arguments specified for command")
        keys = spec.keys(args)
        if not keys:
            raise CommandError("ERR The command has no key arguments")
        return resp.bulk_array(keys)
    if sub == b"help":
        return resp.bulk_array(
            [b"COMMAND", b"COMMAND COUNT", b"COMMAND INFO [<command-name> ...]",
             b"COMMAND DOCS [<command-name> ...]", b"COMMAND GETKEYS <full-command>",
             b"COMMAND LIST"]
        )
    raise CommandError(
        f"ERR unknown subcommand or wrong number of arguments for '{argv[1].decode('utf-8', 'replace')}'. Try COMMAND HELP."
    )


def _group_of(spec: CommandSpec) -> bytes:
    for cat in spec.acl:
        if cat in ("@string", "@hash", "@list", "@set", "@sortedset", "@keyspace", "@connection",
                   "@transaction", "@pubsub", "@scripting", "@geo", "@stream", "@bitmap",
                   "@hyperloglog"):
            name = cat[1:]
            return {"sortedset": b"sorted-set", "keyspace": b"generic"}.get(name, name.encode())
    return b"server"
