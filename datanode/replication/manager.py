"""The node's replication state: role, replication ids and offsets, the backlog, the
sidecar's instructions, and what INFO / ROLE / CLUSTER SHARDS show.

:class:`Replication` is created with the node (``node.replication``) and never
replaced. What runs per write is a separate, role-specific hook object installed as
``node.repl``: :class:`~datanode.replication.primary.Primary` while this node is a
primary with a backlog, :class:`~datanode.replication.replica.ReplicaHooks` while
it is a replica, and nothing (``None``) on a primary that never had a replica.

Replication ids (Redis's PSYNC2): ``replid`` names the history this node's offset
counts in; on promotion the old one moves to ``replid2`` with ``offset2`` (the first
offset of the new history, Redis's ``second_repl_offset``), so replicas of the old
primary can resume from the promoted one. Persisted with every snapshot
(``meta["replication"]``) so a restarted replica resumes from its offset.

Sidecar instructions (``SLOTKEEPER REPLICATE`` / ``PROMOTE``) carry an epoch and a
replica_id: a lower epoch than the last applied one is refused; the same epoch with
the same instruction is a no-op, with another instruction refused. A new replica_id
(the node joined a shard anew) forces a full sync.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ..errors import CommandError
from .backlog import Backlog
from .digest import keyspace_digest
from .fullsync import SyncLoader, adopt
from .primary import Primary
from .replica import LinkState, ReplicaHooks, ReplicaLink

if TYPE_CHECKING:
    from ..server import DataNode

log = logging.getLogger(__name__)

ZERO_ID = "0" * 40
TICK = 0.1
ACK_PERIOD = 1.0


class Role(StrEnum):
    PRIMARY = "primary"
    REPLICA = "replica"


def new_replid() -> str:
    return os.urandom(20).hex()


class StaleInstruction(CommandError):
    """A sidecar instruction older than (or conflicting with) the one applied."""


@dataclass(slots=True)
class SyncStats:
    sync_full: int = 0  # full syncs served (primary)
    sync_partial_ok: int = 0  # partial resyncs accepted (primary)
    sync_partial_err: int = 0  # PSYNC requests that had to fall back to a full sync
    full_syncs_loaded: int = 0  # full syncs loaded (replica)


class Replication:
    def __init__(self, node: DataNode) -> None:
        self.node = node
        s = node.settings
        self.backlog_size = s.repl_backlog_size
        self.timeout = float(s.repl_timeout)
        self.masterauth = s.masterauth
        self.role = Role.PRIMARY
        self.replid = new_replid()
        self.replid2 = ZERO_ID
        self._offset = 0  # see the offset property
        self.offset2 = -1
        self.backlog: Backlog | None = None
        self.epoch = 0
        self.replica_id = 0
        self.instruction: tuple[Any, ...] = ()
        self.stats = SyncStats()
        self.primary = Primary(self)
        self.primary.set_min_acks(s.min_replicas_to_ack, s.repl_ack_timeout / 1000.0)
        self.replica_hooks = ReplicaHooks()
        self.link: ReplicaLink | None = None
        self.primary_addr: tuple[str, int] | None = None
        self._via_client_port = False
        self._force_full = False
        self._last_ack = 0.0
        self._task: asyncio.Task[None] | None = None
        self._starting = False
        node.snapshots.meta_source = self.meta

    @property
    def offset(self) -> int:
        """The replication offset (``master_repl_offset``): bytes of stream so far,
        including what a primary has not flushed yet."""
        primary = self.primary
        if primary._counted != len(primary._parts):
            primary._count()
        return self._offset

    @offset.setter
    def offset(self, value: int) -> None:
        self._offset = value

    # ================================================================== lifecycle
    def start(self) -> None:
        """After the snapshot is loaded, in the running loop: restore the role the
        snapshot recorded, install the hooks, start the housekeeping task."""
        self._restore(self.node.snapshots.meta.get("replication"))
        if self.primary.min_acks and self.role is Role.PRIMARY:
            self.ensure_backlog()
        if self.node.settings.cluster_config:
            self._starting = True
            try:
                self.follow_topology()
            finally:
                self._starting = False
        self._install()
        self._task = asyncio.get_running_loop().create_task(self._ticker())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.link is not None:
            self.link.stop()
        self.primary.drop_all("shutting down")

    def _restore(self, meta: Any) -> None:
        if not isinstance(meta, dict):
            return
        try:
            replid = str(meta["replid"])
            offset = int(meta["offset"])
            self.epoch = int(meta.get("epoch", 0))
            self.replica_id = int(meta.get("replica_id", 0))
            self.instruction = tuple(meta.get("instruction") or ())
            primary = meta.get("primary")
            role = meta.get("role")
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("snapshot replication metadata unusable (%s): starting afresh", exc)
            return
        if role == Role.REPLICA and isinstance(primary, list) and len(primary) == 2:
            self.replid, self.offset = replid, offset
            self.backlog = Backlog(self.backlog_size, offset)
            self.role = Role.REPLICA
            via_client = bool(meta.get("via_client_port"))
            log.info("restored as a replica of %s:%s at offset %d (replication id %s)",
                     primary[0], primary[1], offset, replid)
            self._start_link(str(primary[0]), int(primary[1]), via_client)
        elif offset > 0 or meta.get("backlog"):
            # Our history up to the snapshot can be shared with replicas that have it;
            # what comes after is new (writes after the snapshot may have been lost).
            self.replid2, self.offset2 = replid, offset + 1
            self.offset = offset
            self.backlog = Backlog(self.backlog_size, offset)
            log.info("restored as a primary at offset %d (previous replication id %s kept "
                     "for partial resyncs)", offset, replid)

    def meta(self) -> dict[str, Any]:
        """Stored with every snapshot (taken between two commands: offset and data agree)."""
        return {
            "replication": {
                "role": str(self.role),
                "replid": self.replid,
                "offset": self.offset,
                "backlog": self.backlog is not None,
                "primary": list(self.primary_addr) if self.primary_addr else None,
                "via_client_port": self._via_client_port,
                "epoch": self.epoch,
                "replica_id": self.replica_id,
                "instruction": list(self.instruction),
            }
        }

    def _install(self) -> None:
        node = self.node
        ks = node.ks
        if self.role is Role.REPLICA:
            node.repl = self.replica_hooks
            ks.on_delete = None
            ks.expire_deletes = False
        elif self.backlog is not None:
            node.repl = self.primary
            ks.on_delete = self.primary.on_delete
            ks.expire_deletes = True
        else:
            node.repl = None
            ks.on_delete = None
            ks.expire_deletes = True
        node.update_gates()

    def ensure_backlog(self) -> Backlog:
        if self.backlog is None:
            self.backlog = Backlog(self.backlog_size, self.offset)
            log.info("replication backlog created (%d bytes) at offset %d",
                     self.backlog_size, self.offset)
            self._install()
        return self.backlog

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self.tick(time.monotonic())
            except Exception:
                log.exception("replication housekeeping failed")

    def tick(self, now: float) -> None:
        if self.role is Role.PRIMARY:
            self.primary.tick(now)
            return
        link = self.link
        if link is None:
            return
        if link.state in (LinkState.SYNC, LinkState.CONNECTED):
            if now - link.last_io > self.timeout:
                link.abort(f"nothing from the primary for {self.timeout:.0f}s")
        if link.up and now - self._last_ack >= ACK_PERIOD:
            self._last_ack = now
            link.send_ack()

    # ================================================================== role changes
    def _start_link(self, host: str, port: int, via_client_port: bool) -> None:
        if self.link is not None:
            self.link.stop()
        self.primary_addr = (host, port)
        self._via_client_port = via_client_port
        auth = self.masterauth if via_client_port else ""
        self.link = ReplicaLink(self, host, port, auth)
        self.link.start()

    def become_replica(self, host: str, port: int, via_client_port: bool) -> None:
        was_primary = self.role is Role.PRIMARY
        if was_primary:
            self.primary.flush_now()
            self.role = Role.REPLICA
        if self.backlog is None:
            self._force_full = True  # no history anyone could share
            self.backlog = Backlog(self.backlog_size, self.offset)
        log.info("replicating from %s:%d (replication id %s, offset %d)",
                 host, port, self.replid, self.offset)
        self._install()
        if was_primary:
            self.primary.unblock_all()
            self.primary.drop_all("this node became a replica")
        self._start_link(host, port, via_client_port)

    def become_primary(self, fence: bool) -> bool:
        """Promote; False if already a primary. History is kept (replid → replid2)."""
        if self.role is Role.PRIMARY:
            return False
        if self.link is not None:
            self.link.stop()
            self.link = None
        self.primary_addr = None
        self.replid2, self.offset2 = self.replid, self.offset + 1
        self.replid = new_replid()
        self.role = Role.PRIMARY
        if self.backlog is None:
            self.backlog = Backlog(self.backlog_size, self.offset)
        self._install()
        if fence:
            self.node.set_write_permit(0.0)
        log.info("promoted to primary at offset %d: new replication id %s (previous %s kept "
                 "until offset %d)%s", self.offset, self.replid, self.replid2, self.offset,
                 "; fenced until the sidecar grants a write permit" if fence else "")
        return True

    # ------------------------------------------------------------------ sidecar instructions
    def _accept(self, epoch: int, action: tuple[Any, ...]) -> bool:
        """True to apply, False for a repeat of the applied instruction; raises if stale."""
        if epoch < self.epoch:
            raise StaleInstruction(
                f"STALE instruction epoch {epoch} is older than the applied epoch {self.epoch}"
            )
        if epoch == self.epoch and self.instruction:
            if tuple(action) == tuple(self.instruction):
                return False
            raise StaleInstruction(
                f"STALE epoch {epoch} was already applied with another instruction "
                f"({' '.join(map(str, self.instruction))})"
            )
        return True

    def instruct_replicate(self, host: str, port: int, epoch: int, replica_id: int) -> bool:
        action = ("replicate", host, port, replica_id)
        if not self._accept(epoch, action):
            return False
        new_member = bool(self.replica_id) and replica_id != self.replica_id
        self.epoch, self.replica_id, self.instruction = epoch, replica_id, action
        if new_member:
            log.info("new replica_id %d (was another): full resync", replica_id)
            self._force_full = True
        same = self.role is Role.REPLICA and self.primary_addr == (host, port)
        if not same or new_member:
            self.become_replica(host, port, via_client_port=False)
        return True

    def instruct_promote(self, epoch: int, replica_id: int, fence: bool) -> bool:
        action = ("promote", replica_id)
        if not self._accept(epoch, action):
            return False
        self.epoch, self.replica_id, self.instruction = epoch, replica_id, action
        self.become_primary(fence)
        return True

    def follow_topology(self) -> None:
        """Static cluster (``--cluster-config``, no sidecar): take the role the view gives."""
        if self._task is None and not self._starting:
            return  # the topology file is read before start(): start() follows it
        view = self.node.view
        if view is None or view.topology is None or view.myself is None:
            return
        shard = view.my_shard
        if shard is None:
            return
        me = view.myself
        try:
            if view.is_primary:
                self.instruct_promote(view.epoch, me.replica_id, fence=False)
            else:
                primary = next(n for n in view.topology.nodes if n.id == shard.primary)
                self.instruct_replicate(primary.addr, primary.admin_port, view.epoch,
                                        me.replica_id)
        except StaleInstruction as exc:
            log.warning("static topology role not applied: %s", exc.message)

    # ------------------------------------------------------------------ changes made outside commands
    def propagate(self, cmds: list[list[bytes]]) -> None:
        """Replicate commands for keyspace changes made outside a client command (e.g.
        keys a slot import wrote directly). A no-op on a replica or without a backlog."""
        if self.role is Role.PRIMARY and self.backlog is not None:
            self.primary.propagate(cmds)

    def propagate_entries(self, entries: Iterable[tuple[bytes, Any, int | None]]) -> None:
        """Replicate ``(key, value, expire_at)`` entries written directly into the
        keyspace, as ``RESTORE key <at> <payload> REPLACE ABSTTL``."""
        if self.role is not Role.PRIMARY or self.backlog is None:
            return
        from ..commands.persistence import dump_payload

        self.primary.propagate([
            [b"RESTORE", key, b"%d" % (at or 0), dump_payload(value), b"REPLACE", b"ABSTTL"]
            for key, value, at in entries
        ])

    # ------------------------------------------------------------------ the replica's stream
    def psync_args(self) -> tuple[str, int]:
        if self._force_full:
            return "?", -1
        return self.replid, self.offset + 1

    def force_full_sync(self) -> None:
        """The next PSYNC asks for a full sync (our history is not trusted any more)."""
        self._force_full = True

    def continue_as(self, replid: str) -> None:
        """The primary accepted a partial resync and names its current history."""
        if replid != self.replid:
            self.replid2, self.offset2 = self.replid, self.offset + 1
            self.replid = replid
        self._force_full = False

    def full_sync_loaded(self, loader: SyncLoader, replid: str, offset: int) -> None:
        adopt(self.node.ks, loader.ks)
        self.replid, self.offset = replid, offset
        self.replid2, self.offset2 = ZERO_ID, -1
        if self.backlog is None:
            self.backlog = Backlog(self.backlog_size, offset)
        else:
            self.backlog.reset(offset)
        self._force_full = False
        self.stats.full_syncs_loaded += 1
        self.node.dirty += 1

    def stream_applied(self, data: bytes | bytearray) -> None:
        backlog = self.backlog
        assert backlog is not None
        backlog.append(data)
        self._offset += len(data)

    # ================================================================== facts
    def role_name(self) -> str:
        """``master`` or ``replica`` (HELLO's words)."""
        if self.role is Role.REPLICA:
            return "replica"
        view = self.node.view
        if view is not None and view.myself is not None and not view.is_primary:
            return "replica"
        return "master"

    def offsets(self) -> dict[str, int]:
        out = {self.node.node_id: self.offset}
        if self.role is Role.PRIMARY:
            for f in self.primary.followers.values():
                if f.node_id and f.ack >= 0:
                    out[f.node_id] = f.ack
        return out

    def digest(self) -> tuple[str, int]:
        return keyspace_digest(self.node.ks)

    def loading(self) -> SyncLoader | None:
        link = self.link
        return link.loader if link is not None and self.role is Role.REPLICA else None

    def info(self) -> list[tuple[str, object]]:
        """INFO replication, with Redis's fields."""
        now = time.monotonic()
        out: list[tuple[str, object]] = []
        link = self.link
        if self.role is Role.REPLICA and link is not None:
            loader = link.loader
            out += [
                ("role", "slave"),
                ("master_host", link.host),
                ("master_port", link.port),
                ("master_link_status", "up" if link.up else "down"),
                ("master_last_io_seconds_ago", int(now - link.last_io) if link.state
                 is not LinkState.CONNECT else -1),
                ("master_sync_in_progress", int(loader is not None)),
                ("slave_read_repl_offset", self.offset + link.unapplied),
                ("slave_repl_offset", self.offset),
            ]
            if loader is not None:
                out += [
                    ("master_sync_total_bytes", -1),
                    ("master_sync_read_bytes", loader.nbytes),
                    ("master_sync_left_bytes", -1),
                    ("master_sync_perc", f"{loader.progress() * 100:.2f}"),
                    ("master_sync_total_keys", loader.total),
                    ("master_sync_loaded_keys", loader.loaded),
                    ("master_sync_last_io_seconds_ago", int(now - link.last_io)),
                ]
            if not link.up:
                out.append(("master_link_down_since_seconds", int(now - link.down_since)))
            out += [("slave_priority", 100), ("slave_read_only", 1), ("replica_announced", 1)]
        else:
            out.append(("role", "master"))
        online = self.primary.followers.values() if self.role is Role.PRIMARY else ()
        listed = [f for f in online if f.state != "handshake"]
        out.append(("connected_slaves", len(listed)))
        for i, f in enumerate(listed):
            out.append((
                f"slave{i}",
                f"ip={f.addr},port={f.listening_port},state={f.state},"
                f"offset={max(f.ack, 0)},lag={int(now - f.ack_time)}",
            ))
        b = self.backlog
        out += [
            ("master_failover_state", "no-failover"),
            ("master_replid", self.replid),
            ("master_replid2", self.replid2),
            ("master_repl_offset", self.offset),
            ("second_repl_offset", self.offset2),
            ("repl_backlog_active", int(b is not None)),
            ("repl_backlog_size", self.backlog_size),
            ("repl_backlog_first_byte_offset", b.start + 1 if b is not None else 0),
            ("repl_backlog_histlen", b.histlen if b is not None else 0),
            ("min_replicas_to_ack", self.primary.min_acks),
            ("repl_ack_timeout_ms", int(self.primary.ack_timeout * 1000)),
        ]
        return out

    def loading_info(self) -> dict[str, object]:
        """INFO persistence's loading fields (a replica loading a full sync; the old
        data stays readable meanwhile, hence ``async_loading``)."""
        loader = self.loading()
        if loader is None:
            return {"async_loading": 0}
        elapsed = time.monotonic() - loader.started
        return {
            "loading": 1,
            "async_loading": 1,
            "loading_start_time": int(time.time() - elapsed),
            "loading_total_bytes": -1,
            "loading_loaded_bytes": loader.nbytes,
            "loading_total_keys": loader.total,
            "loading_loaded_keys": loader.loaded,
            "loading_loaded_perc": f"{loader.progress() * 100:.2f}",
            "loading_eta_seconds": int(loader.eta()),
        }

    def stats_info(self) -> list[tuple[str, object]]:
        st = self.stats
        return [
            ("sync_full", st.sync_full),
            ("sync_partial_ok", st.sync_partial_ok),
            ("sync_partial_err", st.sync_partial_err),
            ("sync_full_loaded", st.full_syncs_loaded),
        ]

    def status(self) -> dict[str, object]:
        """``SLOTKEEPER REPLICATION``: everything the sidecar reports, as one map."""
        now = time.monotonic()
        b = self.backlog
        out: dict[str, object] = {
            "role": str(self.role),
            "epoch": self.epoch,
            "replica_id": self.replica_id,
            "replid": self.replid,
            "replid2": self.replid2,
            "offset": self.offset,
            "second_offset": self.offset2,
            "backlog_first_offset": b.start if b is not None else -1,
            "backlog_histlen": b.histlen if b is not None else 0,
            "min_replicas_to_ack": self.primary.min_acks,
            "ack_timeout_ms": int(self.primary.ack_timeout * 1000),
            "sync_full": self.stats.sync_full,
            "sync_partial_ok": self.stats.sync_partial_ok,
            "sync_partial_err": self.stats.sync_partial_err,
            "full_syncs_loaded": self.stats.full_syncs_loaded,
        }
        link = self.link
        if self.role is Role.REPLICA and link is not None:
            loader = link.loader
            out.update({
                "primary": f"{link.host}:{link.port}",
                "link": "up" if link.up else "down",
                "link_state": str(link.state),
                "last_io_ms": int((now - link.last_io) * 1000),
                "sync_in_progress": int(loader is not None),
                "load_progress": f"{loader.progress():.4f}" if loader is not None else "1.0000",
                "loaded_keys": loader.loaded if loader is not None else 0,
                "total_keys": loader.total if loader is not None else 0,
                "unapplied_bytes": link.unapplied,
                "last_error": link.last_error,
            })
        else:
            out["replicas"] = [
                {
                    "node_id": f.node_id,
                    "addr": f.addr,
                    "port": f.listening_port,
                    "state": str(f.state),
                    "ack_offset": f.ack,
                    "lag_bytes": self.offset - f.ack if f.ack >= 0 else -1,
                    "ack_age_ms": int((now - f.ack_time) * 1000),
                }
                for f in self.primary.followers.values()
                if f.state != "handshake"
            ]
        return out
