"""All commands of the data node, gathered into one lookup table."""

from . import (
    admin,
    cluster,
    connection,
    hashes,
    introspection,
    keys,
    lists,
    persistence,
    replication,
    server,
    sets,
    strings,
    transactions,
    transfer,
    zsets,
)
from .table import CommandSpec, build_table

GROUPS = [
    m.group
    for m in (
        connection,
        server,
        introspection,
        transactions,
        strings,
        keys,
        hashes,
        lists,
        sets,
        zsets,
        persistence,
        cluster,
        admin,
        transfer,
        replication,
    )
]

TABLE: dict[bytes, CommandSpec] = build_table(GROUPS)

__all__ = ["TABLE", "CommandSpec"]
