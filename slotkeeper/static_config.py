"""``slotkeeper cluster-config``: write a static cluster's topology and print how to
start each data node with it (a cluster without a control plane)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from clusterstate.layout import static_topology


def run(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="slotkeeper cluster-config",
        description="Write a static cluster topology (balanced slots) for --cluster-config.",
    )
    p.add_argument("--shards", type=int, default=3, help="primaries (default 3)")
    p.add_argument("--replicas", type=int, default=0, help="replicas per shard (default 0)")
    p.add_argument("--host", default="127.0.0.1", help="address every node announces")
    p.add_argument("--base-port", type=int, default=7000, help="client port of the first node")
    p.add_argument("--out", default="cluster.json", help="file to write (default cluster.json)")
    p.add_argument("--data-root", default="./data", help="parent of each node's --dir")
    args = p.parse_args(argv)
    count = args.shards * (1 + args.replicas)
    if args.shards < 1 or args.replicas < 0:
        p.error("--shards must be >= 1 and --replicas >= 0")
    if not 0 < args.base_port and args.base_port + count - 1 + 10000 < 65536:
        p.error("ports out of range: lower --base-port")
    endpoints = [(args.host, args.base_port + i, args.base_port + i + 10000) for i in range(count)]
    try:
        topology = static_topology(endpoints, args.shards, args.replicas)
    except ValueError as exc:
        print(f"slotkeeper cluster-config: {exc}", file=sys.stderr)
        return 2
    Path(args.out).write_bytes(topology.to_json())
    print(f"wrote {args.out}: epoch {topology.epoch}, {args.shards} shards, "
          f"{args.replicas} replica(s) each. Start the nodes with:\n")
    for node in topology.nodes:
        print(
            f"slotkeeper datanode --bind {node.addr} --port {node.port} "
            f"--dir {args.data_root}/{node.port} --cluster-config {args.out} --node-id {node.id} &"
        )
    print(f"\nthen: redis-cli -c -p {args.base_port}   or   "
          f"redis-cli --cluster check {args.host}:{args.base_port}")
    return 0
