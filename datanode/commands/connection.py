"""Connection commands: PING, ECHO, AUTH, HELLO, SELECT, CLIENT, QUIT, RESET."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import resp
from ..errors import (
    AUTH_NOT_SET,
    NOPROTO,
    NOT_INTEGER,
    SELECT_CLUSTER,
    SELECT_RANGE,
    SYNTAX,
    WRONGPASS,
    CommandError,
    wrong_args,
)
from ..numbers import parse_int
from .table import CommandGroup

if TYPE_CHECKING:
    from ..connection import Connection

group = CommandGroup()
command = group.command
subcommand = group.subcommand


@command("ping")
def ping(c: Connection, argv: list[bytes]) -> bytes:
    if len(argv) == 1:
        return resp.PONG
    if len(argv) == 2:
        return resp.bulk(argv[1])
    raise CommandError(wrong_args("ping"))


@command("echo")
def echo(c: Connection, argv: list[bytes]) -> bytes:
    return resp.bulk(argv[1])


@command("select")
def select(c: Connection, argv: list[bytes]) -> bytes:
    index = parse_int(argv[1])
    if index == 0:
        return resp.OK
    if c.server.cluster_mode:
        raise CommandError(SELECT_CLUSTER)
    raise CommandError(SELECT_RANGE)


def _check_password(c: Connection, user: bytes, password: bytes) -> None:
    expected = c.server.requirepass
    if user != b"default" or (expected and password != expected.encode()):
        raise CommandError(WRONGPASS)
    c.authed = True


@command("auth")
def auth(c: Connection, argv: list[bytes]) -> bytes:
    if len(argv) > 3:
        raise CommandError(SYNTAX)
    if not c.server.requirepass and len(argv) == 2:
        raise CommandError(AUTH_NOT_SET)
    user = argv[1] if len(argv) == 3 else b"default"
    _check_password(c, user, argv[-1])
    return resp.OK


@command("hello")
def hello(c: Connection, argv: list[bytes]) -> bytes:
    version = 2 if not c.resp3 else 3
    i = 1
    if len(argv) > 1:
        try:
            version = parse_int(argv[1])
        except CommandError:
            raise CommandError("ERR Protocol version is not an integer or out of range") from None
        if version not in (2, 3):
            raise CommandError(NOPROTO)
        i = 2
    name: bytes | None = None
    while i < len(argv):
        opt = argv[i].upper()
        if opt == b"AUTH" and i + 2 < len(argv):
            _check_password(c, argv[i + 1], argv[i + 2])
            i += 3
        elif opt == b"SETNAME" and i + 1 < len(argv):
            name = argv[i + 1]
            _check_name(name)
            i += 2
        else:
            raise CommandError(f"ERR Syntax error in HELLO option '{argv[i].decode('utf-8', 'replace')}'")
    if not c.authed:
        raise CommandError(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
            "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
            "select the RESP protocol version at the same time"
        )
    if name is not None:
        c.name = name
    c.set_protocol(version)
    server = c.server
    from ..server import REDIS_VERSION

    pairs = [
        (resp.bulk(b"server"), resp.bulk(b"redis")),
        (resp.bulk(b"version"), resp.bulk(REDIS_VERSION.encode())),
        (resp.bulk(b"proto"), resp.integer(version)),
        (resp.bulk(b"id"), resp.integer(c.id)),
        (resp.bulk(b"mode"), resp.bulk(b"cluster" if server.cluster_mode else b"standalone")),
        (resp.bulk(b"role"), resp.bulk(server.role_name().encode())),
        (resp.bulk(b"modules"), resp.EMPTY_ARRAY),
    ]
    return resp.map_of(pairs, c.resp3)


@command("quit")
def quit_(c: Connection, argv: list[bytes]) -> bytes:
    c.closing = True
    return resp.OK


@command("reset")
def reset(c: Connection, argv: list[bytes]) -> bytes:
    c.multi = None
    c.multi_failed = False
    c.unwatch_all()
    c.set_protocol(2)
    c.name = b""
    c.asking = False
    c.readonly = False
    c.authed = not c.server.requirepass or c.admin
    return b"+RESET\r\n"


# ---------------------------------------------------------------------- CLIENT
group.container("client")


def _check_name(name: bytes) -> None:
    if any(ch <= 32 or ch >= 127 for ch in name):
        raise CommandError("ERR Client names cannot contain spaces, newlines or special characters.")


@subcommand("client", "setname")
def client_setname(c: Connection, argv: list[bytes]) -> bytes:
    _check_name(argv[2])
    c.name = argv[2]
    return resp.OK


@subcommand("client", "getname")
def client_getname(c: Connection, argv: list[bytes]) -> bytes:
    return resp.bulk(c.name) if c.name else c.null


@subcommand("client", "id")
def client_id(c: Connection, argv: list[bytes]) -> bytes:
    return resp.integer(c.id)


@subcommand(
    "client",
    "setinfo",
    meta={"arity": 4, "flags": ("noscript", "loading", "stale"), "keys": (0, 0, 0),
          "acl": ("@slow", "@connection")},
)
def client_setinfo(c: Connection, argv: list[bytes]) -> bytes:
    attr = argv[2].lower()
    value = argv[3]
    if any(ch < 33 or ch > 126 for ch in value):
        raise CommandError(
            f"ERR {attr.decode('latin-1')} cannot contain spaces, newlines or special characters."
        )
    if attr == b"lib-name":
        c.lib_name = value
    elif attr == b"lib-ver":
        c.lib_ver = value
    else:
        raise CommandError(f"ERR Unrecognized option '{argv[2].decode('utf-8', 'replace')}'")
    return resp.OK


@subcommand(
    "client",
    "maint_notifications",
    meta={"arity": -3, "flags": ("noscript", "loading", "stale"), "keys": (0, 0, 0),
          "acl": ("@slow", "@connection")},
)
def client_maint_notifications(c: Connection, argv: list[bytes]) -> bytes:
    raise CommandError("ERR CLIENT MAINT_NOTIFICATIONS is not supported by this server")


def client_line(c: Connection) -> bytes:
    flags = "".join(f for f in ("x" if c.multi is not None else "",) if f) or "N"
    return (
        f"id={c.id} addr={c.addr} laddr={c.laddr} fd=-1 name={c.name.decode('latin-1')} "
        f"age={c.age()} idle=0 flags={flags} db=0 sub=0 psub=0 ssub=0 "
        f"multi={len(c.multi) if c.multi is not None else -1} qbuf=0 qbuf-free=0 argv-mem=0 "
        f"multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 "
        f"omem={c.transport.get_write_buffer_size() if c.transport else 0} tot-mem=0 events=r "
        f"cmd={c.last_cmd.decode('latin-1').lower() if isinstance(c.last_cmd, bytes) else '?'} user=default redir=-1 resp={3 if c.resp3 else 2} "
        f"lib-name={c.lib_name.decode('latin-1')} lib-ver={c.lib_ver.decode('latin-1')}"
    ).encode()


@subcommand("client", "list")
def client_list(c: Connection, argv: list[bytes]) -> bytes:
    ids: set[int] | None = None
    if len(argv) > 2:
        if argv[2].upper() == b"ID" and len(argv) > 3:
            ids = {parse_int(a) for a in argv[3:]}
        elif argv[2].upper() == b"TYPE" and len(argv) == 4:
            kind = argv[3].lower()
            if kind not in (b"normal", b"master", b"replica", b"pubsub"):
                raise CommandError(f"ERR Unknown client type '{argv[3].decode('latin-1')}'")
            if kind != b"normal":
                return resp.verbatim(b"", c.resp3)
        else:
            raise CommandError(SYNTAX)
    lines = [
        client_line(x) + b"\n"
        for x in c.server.clients.values()
        if ids is None or x.id in ids
    ]
    return resp.verbatim(b"".join(lines), c.resp3)


@subcommand("client", "info")
def client_info(c: Connection, argv: list[bytes]) -> bytes:
    return resp.verbatim(client_line(c) + b"\n", c.resp3)


@subcommand("client", "kill")
def client_kill(c: Connection, argv: list[bytes]) -> bytes:
    clients = list(c.server.clients.values())
    if len(argv) == 3:  # old form: CLIENT KILL addr:port
        for x in clients:
            if x.addr.encode() == argv[2]:
                x.kill()
                return resp.OK
        raise CommandError("ERR No such client")
    if len(argv) % 2:
        raise CommandError(SYNTAX)
    skipme = True
    filters: list[tuple[bytes, bytes]] = []
    for i in range(2, len(argv), 2):
        opt, val = argv[i].upper(), argv[i + 1]
        if opt == b"SKIPME":
            if val.lower() not in (b"yes", b"no"):
                raise CommandError(SYNTAX)
            skipme = val.lower() == b"yes"
        elif opt in (b"ID", b"ADDR", b"LADDR", b"USER", b"TYPE", b"MAXAGE"):
            if opt in (b"ID", b"MAXAGE"):
                parse_int(val, "ERR client-id should be greater than 0" if opt == b"ID" else NOT_INTEGER)
            filters.append((opt, val))
        else:
            raise CommandError(SYNTAX)
    killed = 0
    for x in clients:
        if skipme and x is c:
            continue
        if all(_kill_match(x, opt, val) for opt, val in filters):
            x.kill()
            killed += 1
    return resp.integer(killed)


def _kill_match(x: Connection, opt: bytes, val: bytes) -> bool:
    if opt == b"ID":
        return x.id == int(val)
    if opt == b"ADDR":
        return x.addr.encode() == val
    if opt == b"LADDR":
        return x.laddr.encode() == val
    if opt == b"USER":
        return val == b"default"
    if opt == b"TYPE":
        return val.lower() == b"normal"
    return x.age() >= int(val)  # MAXAGE


@subcommand("client", "no-evict")
def client_no_evict(c: Connection, argv: list[bytes]) -> bytes:
    if argv[2].lower() not in (b"on", b"off"):
        raise CommandError(SYNTAX)
    return resp.OK


@subcommand("client", "help")
def client_help(c: Connection, argv: list[bytes]) -> bytes:
    return resp.bulk_array(
        [b"CLIENT <subcommand> [<arg> ...]. Subcommands are:", b"GETNAME", b"ID", b"INFO",
         b"KILL <ip:port> | <filter> <value> ...", b"LIST [TYPE <type>] [ID <id> ...]",
         b"SETNAME <name>", b"SETINFO <LIB-NAME|LIB-VER> <value>", b"NO-EVICT ON|OFF"]
    )
