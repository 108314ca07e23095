"""Wire error texts, word for word as Redis gives them, in one table.

Handlers raise :class:`CommandError` (or return ``resp.error(...)``); the dispatcher
turns a raised error into one ``-…`` reply. Texts are kept here so that every
handler says the same thing for the same fault.
"""

from __future__ import annotations

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
NOT_INTEGER = "ERR value is not an integer or out of range"
NOT_FLOAT = "ERR value is not a valid float"
SYNTAX = "ERR syntax error"
NOAUTH = "NOAUTH Authentication required."
WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."
AUTH_NOT_SET = (
    "ERR AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?"
)
OOM = "OOM command not allowed when used memory > 'maxmemory'."
NO_SUCH_KEY = "ERR no such key"
INDEX_OUT_OF_RANGE = "ERR index out of range"
OVERFLOW = "ERR increment or decrement would overflow"
NAN_OR_INF = "ERR increment would produce NaN or Infinity"
EXECABORT = "EXECABORT Transaction discarded because of previous errors."
MULTI_NESTED = "ERR MULTI calls can not be nested"
EXEC_WITHOUT_MULTI = "ERR EXEC without MULTI"
DISCARD_WITHOUT_MULTI = "ERR DISCARD without MULTI"
WATCH_IN_MULTI = "ERR WATCH inside MULTI is not allowed"
STRING_TOO_LONG = "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
SELECT_RANGE = "ERR DB index is out of range"
SELECT_CLUSTER = "ERR SELECT is not allowed in cluster mode"
NOPROTO = "NOPROTO unsupported protocol version"
MAX_CLIENTS = "ERR max number of clients reached"
POSITIVE = "ERR value is out of range, must be positive"
BAD_DUMP = "ERR DUMP payload version or checksum are wrong"
BUSYKEY = "BUSYKEY Target key name already exists."
READONLY = "READONLY You can't write against a read only replica."
MOVED = "MOVED"
# A fenced primary (write permit lapsed) refuses writes with a retryable error;
# CLUSTERDOWN makes redis-py refresh its slot map and retry for ~2.75 s.
WRITE_FENCED = (
    "CLUSTERDOWN The cluster is down and only accepts read commands "
    "(write permit expired: this primary is fenced)"
)


class CommandError(Exception):
    """Raised by a handler to answer one error reply (the text is the whole line)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def wrong_args(name: str) -> str:
    return f"ERR wrong number of arguments for '{name}' command"


def unknown_command(argv: list[bytes]) -> str:
    name = argv[0].decode("utf-8", "replace")
    args = "".join(f"'{a.decode('utf-8', 'replace')[:128]}' " for a in argv[1:21])
    return f"ERR unknown command '{name[:128]}', with args beginning with: {args}"


def unknown_subcommand(sub: bytes, parent: str) -> str:
    return (
        f"ERR unknown subcommand '{sub.decode('utf-8', 'replace')[:128]}'. "
        f"Try {parent.upper()} HELP."
    )


def invalid_expire(command: str) -> str:
    return f"ERR invalid expire time in '{command}' command"
