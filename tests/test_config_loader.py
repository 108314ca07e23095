"""clusterstate.config_loader: the settings layers the three processes share (file <
environment < flags < overrides), their error messages in each process's own error
class, and the etcd TLS flags check (pure: a tmp file, no server)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from clusterstate.config_loader import SettingsSource, check_etcd_tls
from datanode.config import ConfigError as DatanodeConfigError
from datanode.config import load_settings, parse_args


class Refused(ValueError):
    pass


SOURCE = SettingsSource("proc", "P_", Refused, {"port": int},
                        flag_convert={"names": lambda v: tuple(v)})
NAMES = ["port", "zone", "names"]


def flags(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"config": None, "port": None, "zone": None, "names": None,
                                 **kw})


def test_layers_precedence_tables_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[proc]\nport = 1\nzone = "file"\n[proc.extra]\na = 1\n')
    values, tables = SOURCE.layers(NAMES, flags(config=str(path)), {}, tables=("extra",))
    assert values == {"port": 1, "zone": "file"} and tables == {"extra": {"a": 1}}
    plain = tmp_path / "plain.toml"
    plain.write_text('port = 1\nzone = "file"\n')  # top level: no [proc] table
    env = {"P_CONFIG": str(plain), "P_PORT": "2", "P_ZONE": "env"}
    values, _ = SOURCE.layers(NAMES, flags(port="3", names=["x", "y"]), env, {"zone": "over"})
    assert values == {"port": 3, "zone": "over", "names": ("x", "y")}
    assert SOURCE.layers(NAMES, None, {})[0] == {}
    with pytest.raises(Refused, match=r"^invalid value for port: 'x'$"):
        SOURCE.layers(NAMES, None, {"P_PORT": "x"})
    with pytest.raises(Refused, match=r"^unknown setting 'extra' in "):
        SOURCE.layers(NAMES, flags(config=str(path)), {})  # a table not asked for
    with pytest.raises(Refused, match=r"^cannot read config file .*nope\.toml: "):
        SOURCE.layers(NAMES, flags(config=str(tmp_path / "nope.toml")), {})


def test_datanode_settings_layers(tmp_path: Path) -> None:
    path = tmp_path / "d.toml"
    path.write_text('[datanode]\nport = 7100\nmaxmemory = "1kb"\n')
    s = load_settings(parse_args(["--config", str(path)]), {"SLOTKEEPER_MAXMEMORY": "2kb"})
    assert (s.port, s.admin_port, s.maxmemory) == (7100, 17100, 2048)
    s = load_settings(parse_args(["--port", "7200"]), {"SLOTKEEPER_PORT": "7300"})
    assert s.port == 7200
    with pytest.raises(DatanodeConfigError, match="invalid value for cluster-enabled: 'maybe'"):
        load_settings(parse_args(["--cluster-enabled", "maybe"]), {})


@pytest.mark.parametrize("etcd,cacert,cert,key,message", [
    ("a:1", "", "c", "", "give both --etcd-cert and --etcd-key, or neither"),
    ("http://a:1,https://b:2", "", "", "", "endpoints mix http:// and https://"),
    ("http://a:1", "CA", "", "", "TLS files given, use https:// endpoints"),
    ("a:1", "MISSING", "", "", "--etcd-cacert .*: not a readable file"),
    ("https://a:1", "CA", "", "", None),
    ("a:1", "", "", "", None),
])
def test_etcd_tls_check(tmp_path: Path, etcd: str, cacert: str, cert: str, key: str,
                        message: str | None) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    cacert = {"CA": str(ca), "MISSING": str(tmp_path / "missing.pem")}.get(cacert, cacert)
    if message is None:
        check_etcd_tls(etcd, cacert, cert, key, Refused)
    else:
        with pytest.raises(Refused, match=message):
            check_etcd_tls(etcd, cacert, cert, key, Refused)
