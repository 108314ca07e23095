"""How each process reads its settings (STYLE §7), written once for the data node,
the sidecar and the coordinator: a TOML file < the environment < flags (<
overrides), merged into the keyword arguments of the process's one frozen settings
object, which validates them.

- The file is ``--config`` or ``<prefix>CONFIG`` in the environment; it holds the
  settings' names (``-`` or ``_``) at top level or under the process's table
  (``[datanode]``, ``[sidecar]``, ``[coordinator]``).
- The environment holds ``<prefix><NAME>`` (``SLOTKEEPER_PORT``,
  ``SLOTKEEPER_SIDECAR_ETCD`` …).
- Flags are an :mod:`argparse` namespace whose unset flags are None.

Every value goes through the process's converters (``str`` by default); a value
they refuse is reported as ``invalid value for <name>: <value>``, in the process's
own error class. Also here: the etcd TLS flags check of the sidecar and the
coordinator (it reads no certificate and imports no etcd code).

The one module of this package that touches files: a settings file and the TLS
files' readability, once at start.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Converter = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class SettingsSource:
    """Where one process's settings come from, and how its values are converted."""

    table: str  # the file's table for this process ("datanode", …)
    env_prefix: str  # "SLOTKEEPER_", "SLOTKEEPER_SIDECAR_"
    error: type[ValueError]  # the process's ConfigError
    convert: Mapping[str, Converter] = field(default_factory=dict)  # by name; str otherwise
    # flags converted otherwise than file and environment values (a repeated flag)
    flag_convert: Mapping[str, Converter] = field(default_factory=dict)

    def coerce(self, name: str, value: Any) -> Any:
        try:
            return self.convert.get(name, str)(value)
        except (TypeError, ValueError) as exc:
            raise self.error(f"invalid value for {name.replace('_', '-')}: {value!r}") from exc

    def layers(
        self,
        names: Sequence[str],
        args: Any = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        *,
        tables: Collection[str] = (),
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """``(values, tables)``: the settings given, by name (file < environment <
        flags < overrides), and the file's sub-tables named in ``tables`` (e.g. the
        coordinator's ``[coordinator.settings]``), which are not settings."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        found: dict[str, dict[str, Any]] = {}
        path = getattr(args, "config", None) or environ.get(self.env_prefix + "CONFIG")
        if path:
            section = read_toml(path, self.error)
            section = section.get(self.table, section)
            for key, value in section.items():
                name = key.replace("-", "_")
                if name in tables and isinstance(value, dict):
                    found.setdefault(name, {}).update(value)
                    continue
                if name not in names:
                    raise self.error(f"unknown setting {key!r} in {path}")
                values[name] = self.coerce(name, value)
        for name in names:
            env = environ.get(self.env_prefix + name.upper())
            if env is not None:
                values[name] = self.coerce(name, env)
        if args is not None:
            for name in names:
                flag = getattr(args, name, None)
                if flag is None:
                    continue
                special = self.flag_convert.get(name)
                values[name] = special(flag) if special else self.coerce(name, flag)
        if overrides:
            values.update(overrides)
        return values, found


def read_toml(path: str, error: type[ValueError]) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise error(f"cannot read config file {path}: {exc}") from exc


def check_etcd_tls(etcd: str, cacert: str, cert: str, key: str, error: type[ValueError]) -> None:
    """The etcd TLS flags agree with each other and the endpoints, and the files
    can be read (EtcdStore reads them when the store is made; failing here says
    so at start). TLS is on with https:// endpoints or any of the files."""
    if bool(cert) != bool(key):
        raise error("give both --etcd-cert and --etcd-key, or neither")
    schemes = {ep.strip().partition("://")[0].lower() for ep in etcd.split(",") if "://" in ep}
    if "http" in schemes and "https" in schemes:
        raise error(f"--etcd {etcd}: endpoints mix http:// and https://")
    if (cacert or cert) and "http" in schemes:
        raise error(f"--etcd {etcd}: TLS files given, use https:// endpoints (or none)")
    for flag, path in (("--etcd-cacert", cacert), ("--etcd-cert", cert), ("--etcd-key", key)):
        if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            raise error(f"{flag} {path}: not a readable file")


__all__ = ["Converter", "SettingsSource", "check_etcd_tls", "read_toml"]
