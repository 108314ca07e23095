"""The data node's settings: one frozen object from flags, ``SLOTKEEPER_*`` environment
and an optional TOML file (in that order of precedence), validated once."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from clusterstate.config_loader import SettingsSource

POLICIES = ("noeviction", "allkeys-lru", "volatile-ttl")
LOG_LEVELS = ("debug", "info", "warning", "error")

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}


class ConfigError(ValueError):
    """A setting has a value the node cannot run with."""


def parse_memory(text: str | int) -> int:
    """``"100mb"`` → bytes, with Redis's units (k/m/g decimal, kb/mb/gb binary)."""
    if isinstance(text, int):
        value = text
    else:
        s = text.strip().lower()
        i = len(s)
        while i and not s[i - 1].isdigit():
            i -= 1
        unit = s[i:]
        if unit not in _UNITS or not s[:i].isdigit():
            raise ConfigError(f"invalid memory amount {text!r} (e.g. 100mb, 2gb, 1048576)")
        value = int(s[:i]) * _UNITS[unit]
    if value < 0:
        raise ConfigError(f"memory amount must be >= 0, got {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    bind: str = "127.0.0.1"
    port: int = 7000
    admin_bind: str = "127.0.0.1"
    admin_port: int = 0  # 0: port + 10000
    dir: str = "./data"
    requirepass: str = ""
    maxmemory: int = 0
    maxmemory_policy: str = "noeviction"
    snapshot_interval: float = 300.0  # seconds between periodic snapshots when keys changed; 0 = off
    log_level: str = "info"
    maxclients: int = 10000
    proto_max_bulk_len: int = 512 * 1024 * 1024
    max_multibulk_len: int = 1024 * 1024
    client_query_buffer_limit: int = 1024 * 1024 * 1024
    client_output_buffer_limit: int = 256 * 1024 * 1024
    node_id: str = ""
    cluster_enabled: bool = False
    cluster_config: str = ""
    announce_addr: str = ""  # address other nodes and clients reach this node at (default: bind)
    repl_backlog_size: int = 64 * 1024 * 1024  # bytes of stream kept for partial resyncs
    repl_timeout: float = 60.0  # seconds of silence before a replication link is dropped
    masterauth: str = ""  # password for a primary's client port (REPLICAOF)
    min_replicas_to_ack: int = 0  # replicas that must acknowledge a write before its reply
    repl_ack_timeout: int = 1000  # ms a write waits for those acknowledgements

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1-65535, got {self.port}")
        if self.admin_port == 0:
            object.__setattr__(self, "admin_port", self.port + 10000)
        if not 0 < self.admin_port < 65536:
            raise ConfigError(f"admin-port must be 1-65535, got {self.admin_port}")
        if self.admin_port == self.port:
            raise ConfigError("admin-port must differ from port")
        if self.maxmemory_policy not in POLICIES:
            raise ConfigError(
                f"maxmemory-policy must be one of {', '.join(POLICIES)}, got {self.maxmemory_policy!r}"
            )
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log-level must be one of {', '.join(LOG_LEVELS)}")
        if self.snapshot_interval < 0:
            raise ConfigError("snapshot-interval must be >= 0 (0 disables periodic snapshots)")
        if self.maxclients < 1:
            raise ConfigError("maxclients must be >= 1")
        if self.cluster_config:
            object.__setattr__(self, "cluster_enabled", True)
        if not self.announce_addr:
            object.__setattr__(self, "announce_addr", self.bind)
        if self.proto_max_bulk_len < 1024 * 1024:
            raise ConfigError("proto-max-bulk-len must be at least 1mb")
        if self.repl_backlog_size < 16 * 1024:
            raise ConfigError("repl-backlog-size must be at least 16kb")
        if self.repl_timeout <= 0:
            raise ConfigError("repl-timeout must be > 0")
        if self.min_replicas_to_ack < 0:
            raise ConfigError("min-replicas-to-ack must be >= 0")
        if self.repl_ack_timeout <= 0:
            raise ConfigError("repl-ack-timeout must be > 0 (ms)")

    @property
    def snapshot_path(self) -> Path:
        return Path(self.dir) / "dump.skdb"


def parse_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower()
    if text in ("yes", "true", "1", "on"):
        return True
    if text in ("no", "false", "0", "off"):
        return False
    raise ConfigError(f"expected yes or no, got {value!r}")


_CONVERT: dict[str, Any] = {
    "cluster_enabled": parse_bool,
    "port": int,
    "admin_port": int,
    "maxmemory": parse_memory,
    "snapshot_interval": float,
    "maxclients": int,
    "proto_max_bulk_len": parse_memory,
    "max_multibulk_len": int,
    "client_query_buffer_limit": parse_memory,
    "client_output_buffer_limit": parse_memory,
    "repl_backlog_size": parse_memory,
    "repl_timeout": float,
    "min_replicas_to_ack": int,
    "repl_ack_timeout": int,
}


SOURCE = SettingsSource("datanode", "SLOTKEEPER_", ConfigError, _CONVERT)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``slotkeeper datanode`` flags (all default to None: unset)."""
    a = parser.add_argument
    a("--config", help="TOML file with settings (keys as the flags, with - or _)")
    a("--bind", help="address clients connect to (default 127.0.0.1)")
    a("--port", help="client port (default 7000)")
    a("--admin-bind", help="admin port address (default 127.0.0.1)")
    a("--admin-port", help="admin port for the sidecar and operators (default port + 10000)")
    a("--dir", help="data directory: snapshot and node id (default ./data)")
    a("--requirepass", help="password clients must AUTH with")
    a("--maxmemory", help="bound on the dataset estimate, e.g. 100mb (default 0: none)")
    a("--maxmemory-policy", help="noeviction | allkeys-lru | volatile-ttl (default noeviction)")
    a("--snapshot-interval", help="seconds between snapshots when keys changed (0: off; default 300)")
    a("--log-level", help="debug | info | warning | error (default info)")
    a("--maxclients", help="maximum connected clients (default 10000)")
    a("--proto-max-bulk-len", help="largest bulk string a client may send (default 512mb)")
    a("--client-output-buffer-limit", help="disconnect a client whose unread replies exceed this (default 256mb)")
    a("--node-id", help="40-hex node id (default: kept in the data dir, created on first start)")
    a("--cluster-enabled", help="yes: serve as a cluster node (topology from the admin port or --cluster-config)")
    a("--cluster-config", help="static cluster topology JSON file (cluster mode without a control plane)")
    a("--announce-addr", help="address clients and peers reach this node at (default: --bind)")
    a("--repl-backlog-size", help="replication stream kept for partial resyncs, e.g. 64mb (default 64mb)")
    a("--repl-timeout", help="seconds of silence before a replication link is dropped (default 60)")
    a("--masterauth", help="password sent to a primary's client port after REPLICAOF")
    a("--min-replicas-to-ack", help="replicas that must acknowledge a write before it is answered (default 0)")
    a("--repl-ack-timeout", help="ms a write waits for those acknowledgements, then -NOREPLICAS (default 1000)")


def load_settings(
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge TOML file < environment < flags < overrides into one validated Settings."""
    values, _ = SOURCE.layers([f.name for f in fields(Settings)], args, environ, overrides)
    return Settings(**values)


def with_changes(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, **changes)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="slotkeeper datanode")
    add_arguments(parser)
    return parser.parse_args(argv)
