"""The command table: one spec per command, with Redis's metadata.

Each command module owns a :class:`CommandGroup` and registers handlers with
``@group.command("get")``. Arity, flags, key positions, ACL categories and tips come
from :data:`datanode.commands.meta.META` (what redis-server itself reports), so
``COMMAND`` answers as Redis does and cluster clients find keys where they expect.
A command Redis does not have passes its metadata explicitly.

A handler is ``handler(conn, argv) -> bytes``: it gets the connection (for the
keyspace, protocol version and server) and the whole argv, and returns the encoded
reply. Errors are raised as :class:`datanode.errors.CommandError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import CommandError, unknown_subcommand, wrong_args
from .meta import META

if TYPE_CHECKING:
    from ..connection import Connection

Handler = Callable[["Connection", list[bytes]], bytes]

# Commands that run at once inside MULTI instead of being queued.
_RUN_IN_MULTI = frozenset({"exec", "discard", "multi", "watch", "unwatch", "quit", "reset"})
# Commands that change the connection's own state: never on the batch fast path.
_CONNECTION_STATE = _RUN_IN_MULTI | {"auth", "hello", "shutdown", "client", "select"}


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str  # lowercase; "parent|sub" for subcommands
    handler: Handler
    arity: int
    flags: tuple[str, ...]
    first_key: int
    last_key: int
    step: int
    acl: tuple[str, ...] = ()
    tips: tuple[str, ...] = ()
    subcommands: dict[str, CommandSpec] = field(default_factory=dict)
    # Derived once, read on the hot path.
    write: bool = False
    denyoom: bool = False
    noauth: bool = False
    keyed: bool = False
    queued: bool = True  # False: runs at once inside MULTI
    loading_ok: bool = False
    stale_ok: bool = False
    fast_path: bool = True  # False: always through Connection.execute
    single_key: bool = False  # exactly one key, at argv[1]
    min_args: int = 0  # len(argv) bounds from the arity
    max_args: int = 0

    def keys(self, argv: list[bytes]) -> list[bytes]:
        """The key arguments of ``argv`` by this command's key positions."""
        first = self.first_key
        if first <= 0 or len(argv) <= first:
            return []
        last = self.last_key
        if last < 0:
            last = len(argv) + last
        return argv[first : last + 1 : self.step]

    def fail_arity(self, argv: list[bytes]) -> bool:
        a = self.arity
        n = len(argv)
        return n != a if a > 0 else n < -a


def make_spec(name: str, handler: Handler, meta: dict[str, Any] | None = None) -> CommandSpec:
    m = meta if meta is not None else _lookup_meta(name)
    flags = tuple(m["flags"])
    first, last, step = m["keys"]
    return CommandSpec(
        name=name,
        handler=handler,
        arity=m["arity"],
        flags=flags,
        first_key=first,
        last_key=last,
        step=step,
        acl=tuple(m.get("acl", ())),
        tips=tuple(m.get("tips", ())),
        write="write" in flags,
        denyoom="denyoom" in flags,
        noauth="no_auth" in flags,
        keyed=first > 0 or "movablekeys" in flags,
        queued=name not in _RUN_IN_MULTI,
        loading_ok="loading" in flags,
        stale_ok="stale" in flags,
        fast_path=name.partition("|")[0] not in _CONNECTION_STATE,
        single_key=(first, last, step) == (1, 1, 1) and "movablekeys" not in flags,
        min_args=abs(m["arity"]),
        max_args=m["arity"] if m["arity"] > 0 else 1 << 30,
    )


def _lookup_meta(name: str) -> dict[str, Any]:
    parent, _, sub = name.partition("|")
    entry = META.get(parent)
    if entry is None:
        raise KeyError(f"no metadata for command {name!r}: pass meta= explicitly")
    if sub:
        entry = entry["subcommands"].get(name)
        if entry is None:
            raise KeyError(f"no metadata for subcommand {name!r}: pass meta= explicitly")
    return entry


class CommandGroup:
    """The commands one module registers."""

    def __init__(self) -> None:
        self.specs: list[CommandSpec] = []
        self.subs: dict[str, list[CommandSpec]] = {}
        self.containers: dict[str, dict[str, Any] | None] = {}

    def command(self, name: str, meta: dict[str, Any] | None = None) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.specs.append(make_spec(name, fn, meta))
            return fn

        return register

    def container(self, name: str, meta: dict[str, Any] | None = None) -> None:
        """Declare a command made of subcommands (``CONFIG GET`` …), dispatched by the table."""
        self.containers[name] = meta

    def subcommand(
        self, parent: str, sub: str, meta: dict[str, Any] | None = None
    ) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.subs.setdefault(parent, []).append(make_spec(f"{parent}|{sub}", fn, meta))
            return fn

        return register


def _container_handler(parent: str, subs: dict[str, CommandSpec]) -> Handler:
    def dispatch(conn: Connection, argv: list[bytes]) -> bytes:
        sub = subs.get(argv[1].lower().decode("latin-1"))
        if sub is None:
            raise CommandError(unknown_subcommand(argv[1], parent))
        if sub.fail_arity(argv):
            raise CommandError(wrong_args(sub.name))
        return sub.handler(conn, argv)

    return dispatch


def build_table(groups: Iterable[CommandGroup]) -> dict[bytes, CommandSpec]:
    """Merge groups into the lookup table (lower- and upper-case names); duplicates refused."""
    by_name: dict[str, CommandSpec] = {}
    subs: dict[str, list[CommandSpec]] = {}
    containers: dict[str, dict[str, Any] | None] = {}
    for group in groups:
        for spec in group.specs:
            if spec.name in by_name:
                raise ValueError(f"command {spec.name!r} registered twice")
            by_name[spec.name] = spec
        for parent, items in group.subs.items():
            subs.setdefault(parent, []).extend(items)
        containers.update(group.containers)
    for parent, meta in containers.items():
        if parent in by_name:
            raise ValueError(f"command {parent!r} registered twice")
        children: dict[str, CommandSpec] = {}
        for spec in subs.pop(parent, []):
            short = spec.name.partition("|")[2]
            if short in children:
                raise ValueError(f"subcommand {spec.name!r} registered twice")
            children[short] = spec
        base = make_spec(parent, _container_handler(parent, children), meta)
        by_name[parent] = _with_subcommands(base, children)
    if subs:
        raise ValueError(f"subcommands without a container: {sorted(subs)}")
    table: dict[bytes, CommandSpec] = {}
    for name, spec in by_name.items():
        table[name.encode()] = spec
        table[name.upper().encode()] = spec
    return table


def _with_subcommands(spec: CommandSpec, children: dict[str, CommandSpec]) -> CommandSpec:
    from dataclasses import replace

    return replace(spec, subcommands=children)
