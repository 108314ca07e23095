"""The coordinator's settings: one frozen object from flags, ``SLOTKEEPER_*``
environment and an optional TOML file (``--config``; keys as the flag names,
optionally under a ``[coordinator]`` table), in that order of precedence,
validated once (STYLE §7).

Cluster-wide tunables are not here: they live in etcd (``settings``, edited
through the API). ``--set key=value`` (or a ``[coordinator.settings]`` table)
gives the settings written when etcd has none yet, e.g. the bootstrap shape.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import orjson

from clusterstate.config_loader import SettingsSource, check_etcd_tls
from clusterstate.keys import KeyLayoutError, Keys
from clusterstate.records import RecordError, Settings
from dcs.retry import check_lease_timing

from .policy import Policy

LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_HTTP_PORT = 8700


class ConfigError(ValueError):
    """A setting the coordinator cannot run with."""


@dataclass(frozen=True, slots=True)
class Config:
    cluster: str = "default"
    etcd: str = "127.0.0.1:2379"  # endpoints, comma-separated
    etcd_cacert: str = ""  # TLS: CA bundle (PEM) that signed etcd's certificate
    etcd_cert: str = ""  # TLS client certificate (PEM), with etcd_key
    etcd_key: str = ""
    consul: str = ""  # Consul agent address; "" = do not register
    http_host: str = "127.0.0.1"  # the API listens here
    http_port: int = DEFAULT_HTTP_PORT
    token: str = ""  # required by write endpoints when set
    advertise_addr: str = ""  # address others reach the API at (default: http_host)
    instance_id: str = ""  # default: <hostname>-<http_port>
    leader_ttl: int = 5  # seconds: the coordinator/leader lease
    etcd_timeout: float = 1.0  # seconds per etcd request
    loop_wait: float = 1.0  # seconds between cycles when nothing wakes the loop
    transfer_timeout: float = 5.0
    transfer_attempts: int = 3
    transfer_backoff: float = 1.0
    history_limit: int = 1000
    wait_timeout: float = 10.0  # seconds a write request waits for its outcome
    log_level: str = "info"
    initial_settings: str = ""  # JSON object: settings written when etcd has none

    def __post_init__(self) -> None:
        try:
            Keys(self.cluster)
        except KeyLayoutError as exc:
            raise ConfigError(str(exc)) from None
        check_etcd_tls(self.etcd, self.etcd_cacert, self.etcd_cert, self.etcd_key, ConfigError)
        if not 0 < self.http_port < 65536:
            raise ConfigError(f"http-port must be 1-65535, got {self.http_port}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log-level must be one of {', '.join(LOG_LEVELS)}")
        if self.leader_ttl < 2:
            raise ConfigError("leader-ttl must be >= 2 seconds (etcd's minimum)")
        if self.etcd_timeout <= 0 or self.loop_wait <= 0 or self.wait_timeout < 0:
            raise ConfigError("etcd-timeout and loop-wait must be > 0, wait-timeout >= 0")
        if self.history_limit < 1:
            raise ConfigError("history-limit must be >= 1")
        if any(c.isspace() for c in self.token):
            raise ConfigError("token must not contain spaces")
        try:
            check_lease_timing(self.leader_ttl, self.leader_ttl / 3, self.etcd_timeout)
        except ValueError as exc:
            raise ConfigError(f"leader-ttl / etcd-timeout: {exc}") from None
        if not self.advertise_addr:
            host = self.http_host if self.http_host not in ("0.0.0.0", "::", "") else (
                socket.gethostname())
            object.__setattr__(self, "advertise_addr", host)
        if not self.instance_id:
            object.__setattr__(self, "instance_id", f"{socket.gethostname()}-{self.http_port}")
        try:
            self.policy()
        except (ValueError, RecordError) as exc:
            raise ConfigError(str(exc)) from None

    @property
    def api_url(self) -> str:
        host = self.advertise_addr
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.http_port}"

    def settings(self) -> Settings | None:
        if not self.initial_settings:
            return None
        try:
            doc = orjson.loads(self.initial_settings)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"initial settings are not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ConfigError("initial settings must be a JSON object")
        if isinstance(doc.get("bootstrap_members"), list):
            doc["bootstrap_members"] = tuple(doc["bootstrap_members"])
        return Settings().merged(doc)

    def policy(self) -> Policy:
        return Policy(
            transfer_timeout=self.transfer_timeout,
            transfer_attempts=self.transfer_attempts,
            transfer_backoff=self.transfer_backoff,
            initial_settings=self.settings(),
        )


_CONVERT: dict[str, Any] = {
    "http_port": int,
    "leader_ttl": int,
    "etcd_timeout": float,
    "loop_wait": float,
    "transfer_timeout": float,
    "transfer_attempts": int,
    "transfer_backoff": float,
    "history_limit": int,
    "wait_timeout": float,
}


SOURCE = SettingsSource("coordinator", "SLOTKEEPER_", ConfigError, _CONVERT)


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are JSON when they parse as JSON, else text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set wants key=value, got {item!r}")
        try:
            out[key.strip()] = orjson.loads(text)
        except orjson.JSONDecodeError:
            out[key.strip()] = text
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="slotkeeper coordinator",
        description="Run a coordinator instance (one of several; the elected leader acts).",
    )
    a = p.add_argument
    a("--config", help="TOML file (keys as the flags; optionally under [coordinator])")
    a("--cluster", help="cluster name: keys live under /slotkeeper/<cluster>/ (default 'default')")
    a("--etcd", help="etcd endpoints, comma-separated (default 127.0.0.1:2379); "
      "https://host:port for TLS")
    a("--etcd-cacert", help="etcd TLS: CA bundle (PEM) that signed etcd's certificate "
      "(default: system roots); TLS is on with https:// endpoints or any --etcd-c*/--etcd-key")
    a("--etcd-cert", help="etcd TLS client certificate (PEM; with --etcd-key)")
    a("--etcd-key", help="etcd TLS client key (PEM; with --etcd-cert)")
    a("--consul", help="Consul agent host:port to register slotkeeper-coordinator with")
    a("--http-host", help="address the admin API listens on (default 127.0.0.1)")
    a("--http-port", help=f"admin API port (default {DEFAULT_HTTP_PORT})")
    a("--token", help="token write endpoints require (Authorization: Bearer <token>)")
    a("--advertise-addr", help="address others reach the API at (default: --http-host)")
    a("--instance-id", help="this instance's name in the election (default <host>-<port>)")
    a("--leader-ttl", help="seconds of the coordinator/leader lease (default 5)")
    a("--etcd-timeout", help="seconds per etcd request (default 1)")
    a("--loop-wait", help="seconds between cycles when nothing happens (default 1)")
    a("--transfer-timeout", help="seconds a leadership transfer waits for catch-up (default 5)")
    a("--transfer-attempts", help="leadership transfer attempts (default 3)")
    a("--transfer-backoff", help="seconds before the 2nd transfer attempt, doubling (default 1)")
    a("--history-limit", help="history/<epoch> entries kept (default 1000)")
    a("--wait-timeout", help="seconds a write request waits for its outcome, then 202 (default 10)")
    a("--log-level", help="debug | info | warning | error (default info)")
    a("--set", action="append", default=[], metavar="KEY=VALUE",
      help="initial cluster setting, written when etcd has none (repeatable), "
      "e.g. --set bootstrap_primaries=3 --set replicas=1")
    return p


def load_config(
    argv: Sequence[str] = (), environ: Mapping[str, str] | None = None
) -> Config:
    """Flags > environment (``SLOTKEEPER_<NAME>``) > TOML file > defaults."""
    args = parser().parse_args(list(argv))
    names = [f.name for f in fields(Config) if f.name != "initial_settings"]
    values, tables = SOURCE.layers(names, args, environ, tables=("settings",))
    initial = tables.get("settings", {})
    initial.update(_parse_set(args.set))
    if initial:
        values["initial_settings"] = orjson.dumps(initial).decode()
    try:
        return Config(**values)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc)) from exc


__all__ = ["Config", "ConfigError", "load_config", "parser"]
