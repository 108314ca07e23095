"""Prometheus metrics of one coordinator instance (``GET /metrics``).

Each instance has its own registry, so several coordinators can run in one
process (tests) without clashing.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from clusterstate.topology import Health, MigrationState, NodeState

from .actions import Action, CompleteHandoff, Failover, ManualFailover
from .view import ClusterView

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.epoch = Gauge("slotkeeper_epoch", "Config epoch of the last view read", registry=r)
        self.leader = Gauge(
            "slotkeeper_coordinator_leader", "1 while this coordinator is the leader", registry=r
        )
        self.paused = Gauge("slotkeeper_paused", "1 while the cluster is paused", registry=r)
        self.shards = Gauge("slotkeeper_shards", "Shards in the cluster", registry=r)
        self.nodes = Gauge(
            "slotkeeper_nodes", "Nodes by state and health", ["state", "health"], registry=r
        )
        self.failovers = Counter(
            "slotkeeper_failovers",
            "Primary changes made by this coordinator (automatic, manual, transfer)",
            ["kind"],
            registry=r,
        )
        self.actions = Counter(
            "slotkeeper_actions", "Actions applied, by kind", ["kind"], registry=r
        )
        self.cycles = Counter(
            "slotkeeper_cycles",
            "Loop cycles by outcome (acted, idle, standby, conflict, error)",
            ["outcome"],
            registry=r,
        )
        self.cycle_seconds = Histogram(
            "slotkeeper_cycle_seconds",
            "Duration of a loop cycle",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.etcd_errors = Counter(
            "slotkeeper_etcd_errors", "etcd requests that failed (unreachable, refused)", registry=r
        )
        self.cas_conflicts = Counter(
            "slotkeeper_cas_conflicts", "Transactions whose compare-and-set was lost", registry=r
        )
        self.migrations = Gauge(
            "slotkeeper_migrations", "Migration records by state", ["state"], registry=r
        )
        self.migration_slots = Gauge(
            "slotkeeper_migration_slots", "Slots in migration records, by state", ["state"],
            registry=r,
        )
        self.migration_keys = Gauge(
            "slotkeeper_migration_keys_moved", "Keys copied by the migrations on record",
            registry=r,
        )
        self.migration_bytes = Gauge(
            "slotkeeper_migration_bytes_moved", "Bytes copied by the migrations on record",
            registry=r,
        )
        for ms in MigrationState:
            self.migrations.labels(ms.value)
            self.migration_slots.labels(ms.value)
        for state in NodeState:
            for health in Health:
                self.nodes.labels(state.value, health.value)
        for kind in ("automatic", "manual", "transfer"):
            self.failovers.labels(kind)

    def observe_view(self, view: ClusterView) -> None:
        self.epoch.set(view.epoch)
        self.paused.set(1 if view.settings.pause else 0)
        self.shards.set(len(view.shards))
        counts: dict[tuple[str, str], int] = {}
        for e in view.nodes.values():
            key = (e.record.state.value, e.record.health.value)
            counts[key] = counts.get(key, 0) + 1
        for state in NodeState:
            for health in Health:
                self.nodes.labels(state.value, health.value).set(
                    counts.get((state.value, health.value), 0)
                )
        records: dict[str, int] = {}
        slots: dict[str, int] = {}
        for m in view.topology.migrations:
            records[m.state.value] = records.get(m.state.value, 0) + 1
            slots[m.state.value] = slots.get(m.state.value, 0) + sum(
                hi - lo + 1 for lo, hi in m.slots)
        for ms in MigrationState:
            self.migrations.labels(ms.value).set(records.get(ms.value, 0))
            self.migration_slots.labels(ms.value).set(slots.get(ms.value, 0))
        docs = view.migrations.values()
        self.migration_keys.set(sum(int(d.get("keys_moved", 0) or 0) for d in docs))
        self.migration_bytes.set(sum(int(d.get("bytes_moved", 0) or 0) for d in docs))

    def observe_applied(self, actions: tuple[Action, ...]) -> None:
        for action in actions:
            self.actions.labels(action.kind).inc()
            if isinstance(action, ManualFailover):
                self.failovers.labels("manual").inc()
            elif isinstance(action, Failover):
                self.failovers.labels("automatic").inc()
            elif isinstance(action, CompleteHandoff):
                self.failovers.labels("transfer").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["CONTENT_TYPE", "Metrics"]
