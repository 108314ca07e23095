"""Static clusters of real data nodes for tests: topology built here, handed to each
node with ``--cluster-config`` (no control plane)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clusterstate.layout import static_topology
from clusterstate.topology import Topology
from tests.datanode_fixtures import DataNodeProcess, start_datanode
from tests.support import LOOPBACK, free_port


@dataclass
class StaticCluster:
    topology: Topology
    nodes: dict[str, DataNodeProcess] = field(default_factory=dict)  # node id -> process
    config_path: Path = Path()

    def primaries(self) -> list[DataNodeProcess]:
        return [self.nodes[s.primary] for s in self.topology.shards]

    def seeds(self) -> list[tuple[str, int]]:
        return [(LOOPBACK, n.port) for n in self.nodes.values()]

    def push(self, topology: Topology) -> None:
        """Hand a new topology to every node over the admin port."""
        self.topology = topology
        for node in self.nodes.values():
            node.admin().execute_command("SLOTKEEPER", "TOPOLOGY", "SET", topology.to_json())

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


def make_topology(
    shards: int, replicas: int = 0, epoch: int = 1
) -> tuple[Topology, list[tuple[str, int, int]]]:
    """A topology of ``shards`` primaries with ``replicas`` each, on free loopback ports.
    Returns it with ``(node_id, port, admin_port)`` for each node."""
    endpoints = [(LOOPBACK, free_port(), free_port()) for _ in range(shards * (1 + replicas))]
    topology = static_topology(endpoints, shards, replicas, epoch)
    return topology, [(n.id, n.port, n.admin_port) for n in topology.nodes]


def start_static_cluster(root: Path, shards: int = 3, replicas: int = 0) -> StaticCluster:
    topology, ports = make_topology(shards, replicas)
    root.mkdir(parents=True, exist_ok=True)
    config = root / "cluster.json"
    config.write_bytes(topology.to_json())
    cluster = StaticCluster(topology, config_path=config)
    try:
        for node_id, port, admin in ports:
            cluster.nodes[node_id] = start_datanode(
                root / node_id[:8], "--cluster-config", str(config), "--node-id", node_id,
                port=port, admin_port=admin,
            )
    except BaseException:
        cluster.stop()
        raise
    return cluster
