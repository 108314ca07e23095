"""The benchmark sections: name -> function(Context) -> list of Rows.

To add a section (cluster, replication, failover, …) write a module with a function
taking the Context and returning Rows, and register it here. Names are dotted;
``--only datanode`` selects every section whose name starts with ``datanode.``.
Sections in OPT_IN run only when asked for by name.
"""

from __future__ import annotations

from collections.abc import Callable

from . import cluster, datanode, failover, migration, profile, replication, sidecar, transfer
from .report import Context, Row

Section = Callable[[Context], list[Row]]

SECTIONS: dict[str, Section] = {
    "datanode.throughput": datanode.throughput,
    "datanode.memory": datanode.memory,  # memory for 1M keys, then GET p99 during BGSAVE
    "profile.datanode": profile.datanode,  # py-spy of the node under GET -P 16
    "cluster.routing": cluster.run,  # cluster mode's routing check vs no cluster mode
    "transfer": transfer.run,  # slot transfer: keys/s, write-refusal window
    "replication.throughput": replication.throughput,  # SET -P 16 with 0/1/2 replicas, lag
    "replication.full_sync": replication.full_sync,  # 1M keys: time, primary GET p99
    "replication.acked": replication.acked_writes,  # min_replicas_to_ack 1 vs async, -P 1
    "sidecar": sidecar.run,  # etcd write -> view applied p50/p99, sidecar CPU idle / 10 changes/s
    "failover": failover.run,  # whole stack: client write gap per kill mode, acked writes lost, hide
    "migration": migration.run,  # whole stack: scale out 3→4 and back with 1M keys under a client
}
OPT_IN = {"profile.datanode"}


def select(only: str | None) -> list[str]:
    """Section names for ``--only a,b`` (exact names or dotted prefixes), in registry order."""
    if not only:
        return [n for n in SECTIONS if n not in OPT_IN]
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    unknown = [w for w in wanted if not any(_match(n, w) for n in SECTIONS)]
    if unknown:
        raise ValueError(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    return [n for n in SECTIONS if any(_match(n, w) for w in wanted)]


def _match(name: str, wanted: str) -> bool:
    return name == wanted or name.startswith(wanted + ".")
