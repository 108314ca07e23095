"""The sidecar's settings: one frozen object from a TOML file, the environment and
flags (in that order of precedence, lowest first), validated once (STYLE §7).

Cluster-wide tunables (lease TTL, keepalive interval, retry timeout,
``min_replicas_to_ack`` …) are not here: they live in etcd (``settings``) and
are read from there. This object only says how to reach things and who we are.

Environment variables are ``SLOTKEEPER_SIDECAR_<NAME>`` (``SLOTKEEPER_SIDECAR_ETCD``,
``SLOTKEEPER_SIDECAR_CONSUL_TOKEN`` …), so they never collide with the data
node's ``SLOTKEEPER_<NAME>`` on the same host. A TOML file holds the same keys,
at top level or under ``[sidecar]``.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from clusterstate.config_loader import SettingsSource, check_etcd_tls
from clusterstate.keys import KeyLayoutError, Keys

ENV_PREFIX = "SLOTKEEPER_SIDECAR_"


class ConfigError(ValueError):
    """Settings that cannot be used; the message names the setting."""


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    cluster: str = ""
    etcd: tuple[str, ...] = ()  # endpoints "host:port" (or "https://host:port")
    etcd_user: str = ""
    etcd_password: str = ""
    etcd_cacert: str = ""  # TLS: CA bundle (PEM) that signed etcd's certificate
    etcd_cert: str = ""  # TLS client certificate (PEM), with etcd_key
    etcd_key: str = ""
    etcd_timeout: float = 2.0  # seconds per etcd request (keepalives are bounded tighter)
    consul: str = ""  # "" : no Consul registration
    consul_token: str = ""
    consul_verify: str = ""  # CA bundle for https Consul ("" : system default)
    datanode: str = "127.0.0.1:17000"  # the data node's admin address
    advertise_addr: str = ""  # address clients reach the data node at ("" : --datanode's host)
    zone: str = ""
    dir: str = "./data"  # the data node's data dir (node-id, node.json)
    http_bind: str = "127.0.0.1"
    http_port: int = 8008
    log_level: str = "info"
    # Data node death: a reply not seen within this many seconds counts as dead
    # (a closed or refused connection counts at once).
    datanode_timeout: float = 1.0
    ping_interval: float = 0.1
    # Applying a view that moves slots away: wait at most this long for the target
    # primaries to apply it first (docs/slot-transfer.md).
    target_first_timeout: float = 1.0
    # How long to wait for etcd at boot before starting from the local snapshot (rule 5).
    boot_etcd_timeout: float = 3.0
    # Consul deregisters a service whose check stays critical this long (>= 60 s).
    consul_deregister_after: float = 600.0
    # Supervise the data node: run this command and restart it when it exits.
    supervise: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.cluster:
            raise ConfigError("--cluster is required")
        try:
            Keys(self.cluster)
        except KeyLayoutError as exc:
            raise ConfigError(str(exc)) from None
        if not self.etcd:
            raise ConfigError("--etcd needs at least one endpoint")
        check_etcd_tls(",".join(self.etcd), self.etcd_cacert, self.etcd_cert, self.etcd_key,
                       ConfigError)
        if bool(self.etcd_user) != bool(self.etcd_password):
            raise ConfigError("give both --etcd-user and --etcd-password, or neither")
        host, port = split_hostport(self.datanode, "--datanode")
        if not self.advertise_addr:
            if host in ("0.0.0.0", "::", ""):
                raise ConfigError("--advertise-addr is required when --datanode has no host")
            object.__setattr__(self, "advertise_addr", host)
        if not 0 <= self.http_port < 65536:
            raise ConfigError(f"--http-port {self.http_port} is out of range")
        for name in ("etcd_timeout", "datanode_timeout", "ping_interval", "target_first_timeout",
                     "boot_etcd_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.replace('_', '-')} must be > 0")
        if self.ping_interval >= self.datanode_timeout:
            raise ConfigError("--ping-interval must be shorter than --datanode-timeout")
        if self.consul_deregister_after < 60:
            raise ConfigError("--consul-deregister-after must be at least 60 s (Consul's minimum)")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"--log-level {self.log_level!r}: debug, info, warning or error")

    @property
    def keys(self) -> Keys:
        return Keys(self.cluster)

    @property
    def datanode_addr(self) -> tuple[str, int]:
        return split_hostport(self.datanode, "--datanode")

    @property
    def snapshot_path(self) -> Path:
        return Path(self.dir) / "node.json"

    @property
    def health_url(self) -> str:
        return f"http://{self.advertise_addr}:{self.http_port}/health"


def split_hostport(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        raise ConfigError(f"{what} {text!r}: expected host:port")
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"{what} {text!r}: port is not a number") from None
    if not 0 < number < 65536:
        raise ConfigError(f"{what} {text!r}: port out of range")
    return host.strip("[]"), number


def _split_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split(",") if p.strip())
    return tuple(str(v).strip() for v in value if str(v).strip())


def _split_command(value: Any) -> tuple[str, ...]:
    return tuple(shlex.split(value)) if isinstance(value, str) else tuple(str(v) for v in value)


_CONVERT: dict[str, Any] = {
    "etcd": _split_list,
    "supervise": _split_command,
    "etcd_timeout": float,
    "http_port": int,
    "datanode_timeout": float,
    "ping_interval": float,
    "target_first_timeout": float,
    "boot_etcd_timeout": float,
    "consul_deregister_after": float,
}


def _split_repeated(values: Any) -> tuple[str, ...]:
    """A repeated flag, each possibly comma-separated."""
    return tuple(e for item in values for e in _split_list(item))


SOURCE = SettingsSource("sidecar", ENV_PREFIX, ConfigError, _CONVERT,
                        flag_convert={"etcd": _split_repeated})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``slotkeeper sidecar`` flags (all default to None: unset)."""
    a = parser.add_argument
    a("--config", help="TOML file with settings (keys as the flags, with - or _)")
    a("--cluster", help="cluster name: keys live under /slotkeeper/<cluster>/ (required)")
    a("--etcd", action="append",
      help="etcd endpoint host:port (https://host:port for TLS); repeat or comma-separate "
      "for several (required)")
    a("--etcd-user", help="etcd user (with --etcd-password)")
    a("--etcd-password", help="etcd password (prefer the environment: SLOTKEEPER_SIDECAR_ETCD_PASSWORD)")
    a("--etcd-cacert", help="etcd TLS: CA bundle (PEM) that signed etcd's certificate "
      "(default: system roots); TLS is on with https:// endpoints or any --etcd-c*/--etcd-key")
    a("--etcd-cert", help="etcd TLS client certificate (PEM; with --etcd-key)")
    a("--etcd-key", help="etcd TLS client key (PEM; with --etcd-cert)")
    a("--etcd-timeout", help="seconds per etcd request (default 2)")
    a("--consul", help="Consul agent address host:port or URL (default: no Consul registration)")
    a("--consul-token", help="Consul ACL token (or CONSUL_HTTP_TOKEN)")
    a("--consul-verify", help="CA bundle for an https Consul address")
    a("--datanode", help="the data node's admin address host:port (default 127.0.0.1:17000)")
    a("--advertise-addr", help="address clients reach the data node at (default: --datanode's host)")
    a("--zone", help="failure zone of this host (placement, failover preference)")
    a("--dir", help="the data node's data dir: node-id and the local snapshot node.json (default ./data)")
    a("--http-bind", help="address of the sidecar's HTTP endpoints (default 127.0.0.1)")
    a("--http-port", help="port of the sidecar's HTTP endpoints (default 8008)")
    a("--log-level", help="debug | info | warning | error (default info)")
    a("--datanode-timeout", help="seconds without a reply before the data node counts as dead (default 1)")
    a("--ping-interval", help="seconds between pings of the data node (default 0.1)")
    a("--target-first-timeout", help="seconds to wait for migration targets to apply a view first (default 1)")
    a("--boot-etcd-timeout", help="seconds to wait for etcd at boot before starting from the local snapshot (default 3)")
    a("--consul-deregister-after", help="seconds critical before Consul drops the service (default 600)")
    a("--supervise", help="command line of the data node: run it and restart it when it exits")


def load_config(
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SidecarConfig:
    """Merge TOML file < environment < flags < overrides into one validated config."""
    values, _ = SOURCE.layers([f.name for f in fields(SidecarConfig)], args, environ, overrides)
    try:
        return SidecarConfig(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="slotkeeper sidecar",
        description="Run beside a data node: its identity, role at boot, etcd lease, write "
        "permit, Consul registration and the views it serves.",
    )
    add_arguments(parser)
    return parser.parse_args(argv)
