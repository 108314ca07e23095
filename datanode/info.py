"""INFO: the node's facts rendered as Redis's ``# Section`` / ``key:value`` text."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import DataNode

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        return 0


def human(n: int) -> str:
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n}B"


def _server(node: DataNode) -> list[tuple[str, object]]:
    from .server import REDIS_VERSION

    now = time.time()
    return [
        ("redis_version", REDIS_VERSION),
        ("redis_git_sha1", "00000000"),
        ("redis_git_dirty", 0),
        ("redis_mode", "cluster" if node.cluster_mode else "standalone"),
        ("slotkeeper_version", _version()),
        ("os", f"{platform.system()} {platform.release()} {platform.machine()}"),
        ("arch_bits", 64 if sys.maxsize > 2**32 else 32),
        ("multiplexing_api", "epoll"),
        ("python_version", platform.python_version()),
        ("process_id", os.getpid()),
        ("run_id", node.run_id),
        ("tcp_port", node.settings.port),
        ("admin_port", node.settings.admin_port),
        ("server_time_usec", int(now * 1_000_000)),
        ("uptime_in_seconds", node.uptime()),
        ("uptime_in_days", node.uptime() // 86400),
        ("hz", 10),
        ("executable", sys.argv[0]),
        ("config_file", ""),
    ]


def _version() -> str:
    from slotkeeper import __version__

    return __version__


def _clients(node: DataNode) -> list[tuple[str, object]]:
    return [
        ("connected_clients", sum(1 for c in node.clients.values() if not c.admin)),
        ("admin_clients", sum(1 for c in node.clients.values() if c.admin)),
        ("maxclients", node.maxclients),
        ("blocked_clients", 0),
    ]


def _memory(node: DataNode) -> list[tuple[str, object]]:
    used = node.used_memory()
    rss = rss_bytes()
    node.peak_memory = max(node.peak_memory, used)
    ks = node.ks
    return [
        ("used_memory", used),
        ("used_memory_human", human(used)),
        ("used_memory_rss", rss),
        ("used_memory_rss_human", human(rss)),
        ("used_memory_peak", node.peak_memory),
        ("used_memory_peak_human", human(node.peak_memory)),
        ("used_memory_dataset", ks.mem),
        ("maxmemory", ks.maxmemory),
        ("maxmemory_human", human(ks.maxmemory)),
        ("maxmemory_policy", ks.policy),
        ("mem_allocator", "pymalloc"),
    ]


def _persistence(node: DataNode) -> list[tuple[str, object]]:
    fields = node.snapshots.info()
    fields.update(node.replication.loading_info())
    return [*fields.items(), ("aof_enabled", 0)]


def _stats(node: DataNode) -> list[tuple[str, object]]:
    st = node.stats
    ks = node.ks
    return [
        ("total_connections_received", st.total_connections),
        ("total_commands_processed", st.commands),
        ("instantaneous_ops_per_sec", node.ops_per_sec),
        ("rejected_connections", st.rejected_connections),
        ("fenced_writes", st.fenced_writes),
        ("expired_keys", ks.expired_keys),
        ("evicted_keys", ks.evicted_keys),
        ("keyspace_hits", ks.hits),
        ("keyspace_misses", ks.misses),
        *node.replication.stats_info(),
    ]


def _replication(node: DataNode) -> list[tuple[str, object]]:
    return node.replication_info()


def _cluster(node: DataNode) -> list[tuple[str, object]]:
    return [("cluster_enabled", int(node.cluster_mode))]


def _keyspace(node: DataNode) -> list[tuple[str, object]]:
    ks = node.ks
    if ks.count == 0:
        return []
    return [("db0", f"keys={ks.count},expires={len(ks.expires)},avg_ttl=0")]


SECTIONS: dict[str, Callable[[DataNode], list[tuple[str, object]]]] = {
    "server": _server,
    "clients": _clients,
    "memory": _memory,
    "persistence": _persistence,
    "stats": _stats,
    "replication": _replication,
    "cluster": _cluster,
    "keyspace": _keyspace,
}
DEFAULT = list(SECTIONS)


def render(node: DataNode, names: Sequence[str]) -> str:
    wanted: list[str] = []
    for name in names or ["default"]:
        name = name.lower()
        if name in ("default", "all", "everything"):
            wanted.extend(DEFAULT)
        elif name in SECTIONS:
            wanted.append(name)
    out: list[str] = []
    for name in dict.fromkeys(wanted):
        if out:
            out.append("")
        out.append("# " + name.capitalize())
        out.extend(f"{k}:{v}" for k, v in SECTIONS[name](node))
    return "\r\n".join(out) + "\r\n"
