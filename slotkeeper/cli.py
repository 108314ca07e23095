"""``slotkeeper <subcommand> …``: one console script for every process and operator command.

Subcommands are imported lazily, so ``slotkeeper datanode`` never loads the
coordinator's or sidecar's code.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, function taking argv and returning an exit code, summary)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "datanode": ("datanode.main", "run", "run a data node (the RESP server)"),
    "sidecar": ("sidecar.main", "run", "run the sidecar beside a data node (etcd, Consul, role)"),
    "coordinator": ("coordinator.main", "run", "run a coordinator (one is elected leader)"),
    "up": ("slotkeeper.up", "run", "start a whole local cluster (etcd, Consul, coordinators, nodes)"),
    "cluster-config": (
        "slotkeeper.static_config", "run", "write a static cluster topology for --cluster-config"
    ),
}

# Operator commands: talk to the coordinator's admin API (coordinator/cli.py).
OPERATOR_COMMANDS = (
    "status", "nodes", "shards", "history", "hide", "unhide", "remove", "failover", "tag",
    "pause", "resume", "settings", "rebalance", "add-shard", "remove-shard", "migrations",
    "drain", "move-shard",
)

USAGE = (
    "usage: slotkeeper <subcommand> [options]\n\nprocesses and tools:\n"
    + "".join(f"  {name:<14} {summary}\n" for name, (_, _, summary) in SUBCOMMANDS.items())
    + "\noperator commands (talk to the coordinator):\n  "
    + " ".join(OPERATOR_COMMANDS)
    + "\n\nRun 'slotkeeper <subcommand> --help' for its options."
)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        from slotkeeper import __version__

        print(f"slotkeeper {__version__}")
        return 0
    if args[0] in OPERATOR_COMMANDS:
        operator = importlib.import_module("coordinator.cli")
        return int(operator.run(args[0], args[1:]) or 0)
    entry = SUBCOMMANDS.get(args[0])
    if entry is None:
        print(f"slotkeeper: unknown subcommand {args[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module, func, _ = entry
    return int(getattr(importlib.import_module(module), func)(args[1:]) or 0)
