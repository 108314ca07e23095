"""Cluster mode's cost: a data node serving all 16384 slots as a one-shard cluster
(every keyed command checked for its slot) next to the same node without cluster mode.
Target: cluster mode keeps ≥ 0.9 × the non-cluster throughput."""

from __future__ import annotations

import statistics
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path

from clusterstate.layout import static_topology

from . import procs, redisbench
from .procs import LOOPBACK, Server, free_port
from .report import Context, Row, Target


def _cluster_argv(port: int, d: Path) -> list[str]:
    admin = free_port()
    topology = static_topology([(LOOPBACK, port, admin)], shards=1, replicas=0)
    config = d / "cluster.json"
    config.write_bytes(topology.to_json())
    argv = procs._datanode_argv(port, d)
    i = argv.index("--admin-port")
    argv[i + 1] = str(admin)
    return [*argv, "--cluster-config", str(config), "--node-id", topology.nodes[0].id]


def run(ctx: Context) -> list[Row]:
    rounds = ctx.rounds_or(3)
    n1, n16 = (20_000, 100_000) if ctx.quick else (200_000, 1_000_000)
    jobs = [("set,get", n1, 1), ("set,get", n16, 16)]
    ctx.say(f"cluster mode vs not: redis-benchmark -c 50 -t set,get, {rounds} interleaved rounds")
    rps: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    errors: list[str] = []
    with ExitStack() as stack:
        plain = stack.enter_context(procs.datanode())
        clustered = stack.enter_context(Server("ours", "data node (cluster mode)", _cluster_argv))
        for r in range(rounds):
            pair = (clustered, plain) if r % 2 == 0 else (plain, clustered)
            for tests, n, pipeline in jobs:
                for server in pair:
                    res = redisbench.run(server.port, tests, n, pipeline=pipeline)
                    errors += [f"{server.label}: {e}" for e in res.errors]
                    kind = "cluster" if server is clustered else "plain"
                    for name, cols in res.tests.items():
                        rps[(name, pipeline)][kind].append(cols["rps"])
    rows = []
    for (name, pipeline), by in sorted(rps.items()):
        ours = statistics.median(by["cluster"]) if by["cluster"] else None
        ref = statistics.median(by["plain"]) if by["plain"] else None
        rows.append(Row(f"cluster mode {name} -P {pipeline} (ref: non-cluster)", ours, ref,
                        unit="rps", target=Target(">=", 0.9, of="non-cluster"), must_run=True,
                        error="; ".join(errors[:3])))
    return rows
