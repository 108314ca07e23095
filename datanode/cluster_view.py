"""One node's precomputed, immutable view of a :class:`Topology`.

Built once per topology change (:meth:`ClusterView.build`) and swapped whole. The
hot path only indexes two plain lists: ``owner[slot]`` (the owning
:class:`ShardRecord`, or None) and ``moved[slot]`` (``b"host:port"`` of that
shard's primary, one shared bytes object per shard). The CLUSTER replies are
rendered from it as RESP bytes and cached per (resp3, admin), since the view never
changes.

Visibility (DESIGN.md §2, PROTOCOL.md §2): a hidden node is shown only to admin
connections; a shard whose primary is hidden (only possible for a shard owning no
slots) is hidden with its replicas. SLOTS lists a replica only when its health is
``online``; SHARDS and NODES list loading and failed nodes. Spares (role none) are
in no reply, except that a node always shows its own ``myself`` line in NODES.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from clusterstate.slots import SLOT_COUNT
from clusterstate.topology import (
    Health,
    NodeRecord,
    NodeState,
    Role,
    ShardRecord,
    SlotRange,
    Topology,
)

from . import resp
from .errors import CommandError

UNKNOWN_NODE = "ERR Unknown node {}"
NOT_A_MASTER = "ERR The specified node is not a master"

_NO_OFFSETS: Mapping[str, int] = {}
_NO_MARKS: Mapping[int, str] = {}


@dataclass(frozen=True, slots=True, eq=False)
class ClusterView:
    epoch: int
    topology: Topology | None
    my_id: str
    myself: NodeRecord | None
    """My record in the topology (None when the topology does not list me)."""
    my_shard: ShardRecord | None
    is_primary: bool
    ok: bool
    """True iff every one of the 16384 slots has an owner."""
    owner: list[ShardRecord | None]
    moved: list[bytes | None]
    primary_of_my_shard: bytes | None
    slots_assigned: int
    slots_fail: int
    """Slots whose owning primary is served with health ``fail``."""
    _me: NodeRecord = field(repr=False)
    _nodes: dict[str, NodeRecord] = field(repr=False)
    _shard_of: dict[str, ShardRecord] = field(repr=False)
    _addr: dict[str, bytes] = field(repr=False)
    _ranges: dict[str, list[SlotRange]] = field(repr=False)
    _runs: list[tuple[int, int, ShardRecord]] = field(repr=False)
    _cache: dict[tuple[object, ...], bytes] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        topology: Topology | None,
        my_id: str,
        my_addr: str,
        my_port: int,
        my_admin_port: int,
    ) -> ClusterView:
        nodes = {n.id: n for n in topology.nodes} if topology else {}
        shards = topology.shards if topology else ()
        myself = nodes.get(my_id)
        me = myself or NodeRecord(
            my_id,
            my_addr,
            my_port,
            my_admin_port,
            role=Role.NONE,
            state=NodeState.ONLINE,
            health=Health.ONLINE,
        )
        my_shard = next((s for s in shards if myself and s.id == myself.shard), None)

        owner: list[ShardRecord | None] = [None] * SLOT_COUNT
        moved: list[bytes | None] = [None] * SLOT_COUNT
        ranges: dict[str, list[SlotRange]] = {}
        runs: list[tuple[int, int, ShardRecord]] = []
        address = {n.id: f"{n.addr}:{n.port}".encode() for n in nodes.values()}
        assigned = failed = 0
        for s in shards:
            primary = nodes[s.primary]
            ranges[s.id] = _merged(s.slots)
            for start, end in ranges[s.id]:
                n = end - start + 1
                owner[start : end + 1] = [s] * n
                moved[start : end + 1] = [address[s.primary]] * n
                runs.append((start, end, s))
                assigned += n
                if primary.health is Health.FAIL:
                    failed += n
        runs.sort(key=lambda run: run[0])
        return cls(
            epoch=topology.epoch if topology else 0,
            topology=topology,
            my_id=my_id,
            myself=myself,
            my_shard=my_shard,
            is_primary=my_shard is not None and my_shard.primary == my_id,
            ok=assigned == SLOT_COUNT,
            owner=owner,
            moved=moved,
            primary_of_my_shard=address[my_shard.primary] if my_shard else None,
            slots_assigned=assigned,
            slots_fail=failed,
            _me=me,
            _nodes=nodes,
            _shard_of={s.id: s for s in shards},
            _addr=address,
            _ranges=ranges,
            _runs=runs,
        )

    def addr_of(self, node_id: str) -> bytes | None:
        """``b"host:port"`` of any node in the topology (hidden ones too), e.g. an ASK
        target; None for an unknown id. Primaries share their ``moved`` bytes object."""
        return self._addr.get(node_id)

    # ----------------------------------------------------------------- visibility

    def _shards(self, admin: bool) -> Iterator[ShardRecord]:
        """Shards shown: all for admin, else those whose primary is not hidden."""
        for s in self.topology.shards if self.topology else ():
            if admin or not self._nodes[s.primary].hidden:
                yield s

    def _replicas(self, shard: ShardRecord, admin: bool) -> list[NodeRecord]:
        reps = [self._nodes[r] for r in shard.replicas]
        return reps if admin else [r for r in reps if not r.hidden]

    def _listed(self, admin: bool) -> list[NodeRecord]:
        """The nodes of CLUSTER NODES, in order: per shard primary then replicas, and
        myself last when I am not otherwise listed (a spare, or hidden)."""
        out: list[NodeRecord] = []
        for s in self._shards(admin):
            out.append(self._nodes[s.primary])
            out.extend(self._replicas(s, admin))
        if all(n.id != self.my_id for n in out):
            out.append(self._me)
        return out

    # ----------------------------------------------------------------- CLUSTER SLOTS

    def slots_reply(self, resp3: bool, admin: bool) -> bytes:
        key = ("slots", resp3, admin)
        reply = self._cache.get(key)
        if reply is None:
            entries = []
            for start, end, s in self._runs:
                members = [self._nodes[s.primary]] + [
                    r for r in self._replicas(s, admin) if r.health is Health.ONLINE
                ]
                parts = [resp.integer(start), resp.integer(end)]
                parts.extend(_slots_node(n, resp3) for n in members)
                entries.append(resp.array(parts))
            reply = self._cache[key] = resp.array(entries)
        return reply

    # ----------------------------------------------------------------- CLUSTER SHARDS

    def shards_reply(
        self, resp3: bool, admin: bool, offsets: Mapping[str, int] = _NO_OFFSETS
    ) -> bytes:
        """``offsets`` maps node id → replication offset (0 when absent). Cached only
        without offsets, since those change all the time."""
        key = ("shards", resp3, admin)
        if not offsets and key in self._cache:
            return self._cache[key]
        entries = []
        for s in self._shards(admin):
            flat = [resp.integer(x) for pair in self._ranges[s.id] for x in pair]
            members = [self._nodes[s.primary]] + self._replicas(s, admin)
            nodes = [_shards_node(n, offsets.get(n.id, 0), resp3) for n in members]
            entries.append(
                resp.map_of(
                    [
                        (resp.bulk(b"slots"), resp.array(flat)),
                        (resp.bulk(b"nodes"), resp.array(nodes)),
                    ],
                    resp3,
                )
            )
        reply = resp.array(entries)
        if not offsets:
            self._cache[key] = reply
        return reply

    # ----------------------------------------------------------------- CLUSTER NODES

    def nodes_reply(
        self,
        resp3: bool,
        admin: bool,
        migrating: Mapping[int, str] = _NO_MARKS,
        importing: Mapping[int, str] = _NO_MARKS,
    ) -> bytes:
        """``migrating``/``importing`` map slot → peer node id; their markers go on the
        ``myself`` line only. Cached only when there are no markers."""
        key = ("nodes", resp3, admin)
        marked = bool(migrating or importing)
        if not marked and key in self._cache:
            return self._cache[key]
        marks = _markers(migrating, importing) if marked else ""
        text = "".join(
            self._line(n, n.id == self.my_id, marks if n.id == self.my_id else "") + "\n"
            for n in self._listed(admin)
        )
        reply = resp.verbatim(text.encode(), resp3)
        if not marked:
            self._cache[key] = reply
        return reply

    def _line(self, n: NodeRecord, me: bool, marks: str = "") -> str:
        flags = ["myself"] if me else []
        replica = n.role is Role.REPLICA
        flags.append("slave" if replica else "master")
        failed = n.health is Health.FAIL
        if failed:
            flags.append("fail")
        if n.nofailover:
            flags.append("nofailover")
        master = self._shard_of[n.shard].primary if replica else "-"
        link = "connected" if me or not failed else "disconnected"
        line = (
            f"{n.id} {n.addr}:{n.port}@{n.admin_port} {','.join(flags)} {master} "
            f"0 0 {self.epoch} {link}"
        )
        if n.role is Role.PRIMARY:
            for start, end in self._ranges[n.shard]:
                line += f" {start}" if start == end else f" {start}-{end}"
        return line + (" " + marks if marks else "")

    # ----------------------------------------------------------------- CLUSTER REPLICAS

    def replicas_reply(self, node_id: bytes | str, resp3: bool, admin: bool) -> bytes:
        """CLUSTER REPLICAS/SLAVES: the NODES lines (no ``\\n``) of a primary's replicas.
        Raises :class:`CommandError` for an unknown node or one that is not a master."""
        ident = node_id.decode("utf-8", "replace") if isinstance(node_id, bytes) else node_id
        key = ("replicas", ident, admin)  # the reply is an array in RESP2 and RESP3 alike
        reply = self._cache.get(key)
        if reply is not None:
            return reply
        listed = {n.id: n for n in self._listed(admin)}
        target = listed.get(ident)
        if target is None:
            raise CommandError(UNKNOWN_NODE.format(ident))
        if target.role is Role.REPLICA:
            raise CommandError(NOT_A_MASTER)
        lines = []
        if target.role is Role.PRIMARY:
            shard = self._shard_of[target.shard]
            lines = [
                self._line(r, r.id == self.my_id).encode() for r in self._replicas(shard, admin)
            ]
        reply = self._cache[key] = resp.bulk_array(lines)
        return reply

    # ----------------------------------------------------------------- CLUSTER INFO

    def info_reply(self, resp3: bool, admin: bool = False) -> bytes:
        key = ("info", resp3, admin)
        reply = self._cache.get(key)
        if reply is None:
            fields = [
                ("cluster_state", "ok" if self.ok else "fail"),
                ("cluster_slots_assigned", self.slots_assigned),
                ("cluster_slots_ok", self.slots_assigned - self.slots_fail),
                ("cluster_slots_pfail", 0),
                ("cluster_slots_fail", self.slots_fail),
                ("cluster_known_nodes", len(self._listed(admin))),
                ("cluster_size", sum(1 for s in self._shards(True) if s.slots)),
                ("cluster_current_epoch", self.epoch),
                ("cluster_my_epoch", self.epoch),
                ("cluster_stats_messages_sent", 0),
                ("cluster_stats_messages_received", 0),
                ("total_cluster_links_buffer_limit_exceeded", 0),
            ]
            text = "".join(f"{k}:{v}\r\n" for k, v in fields).encode()
            reply = self._cache[key] = resp.verbatim(text, resp3)
        return reply

    # ----------------------------------------------------------------- MYID / MYSHARDID

    def myid_reply(self) -> bytes:
        return resp.bulk(self.my_id.encode())

    def myshardid_reply(self) -> bytes:
        """My shard's id; a node in no shard is a shard of its own, named by its id."""
        return resp.bulk((self.my_shard.id if self.my_shard else self.my_id).encode())


def _merged(ranges: tuple[SlotRange, ...]) -> list[SlotRange]:
    """Sorted maximal runs of a shard's (validated, non-overlapping) ranges."""
    out: list[SlotRange] = []
    for start, end in sorted(ranges):
        if out and out[-1][1] + 1 == start:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def _slots_node(n: NodeRecord, resp3: bool) -> bytes:
    """``[ip, port, id, metadata]`` with empty metadata (``*0`` / ``%0``)."""
    return resp.array(
        [
            resp.bulk(n.addr.encode()),
            resp.integer(n.port),
            resp.bulk(n.id.encode()),
            resp.map_of([], resp3),
        ]
    )


def _shards_node(n: NodeRecord, offset: int, resp3: bool) -> bytes:
    addr = resp.bulk(n.addr.encode())
    role = b"replica" if n.role is Role.REPLICA else b"master"
    return resp.map_of(
        [
            (resp.bulk(b"id"), resp.bulk(n.id.encode())),
            (resp.bulk(b"port"), resp.integer(n.port)),
            (resp.bulk(b"ip"), addr),
            (resp.bulk(b"endpoint"), addr),
            (resp.bulk(b"role"), resp.bulk(role)),
            (resp.bulk(b"replication-offset"), resp.integer(offset)),
            (resp.bulk(b"health"), resp.bulk(n.health.value.encode())),
        ],
        resp3,
    )


def _markers(migrating: Mapping[int, str], importing: Mapping[int, str]) -> str:
    """Open-slot markers in slot order, migrating winning over importing (as Redis)."""
    out = []
    for slot in sorted(set(migrating) | set(importing)):
        if slot in migrating:
            out.append(f"[{slot}->-{migrating[slot]}]")
        else:
            out.append(f"[{slot}-<-{importing[slot]}]")
    return " ".join(out)
