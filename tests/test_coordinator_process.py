"""The coordinator as a process: configuration (flags > environment > TOML),
and ``coordinator.main.run`` for real — API, election, initial settings,
Consul registration of ``slotkeeper-coordinator``, clean stop on SIGTERM
(resigning leadership, deregistering)."""

from __future__ import annotations

import json
import signal
import sys
import urllib.request
from pathlib import Path

import pytest

from coordinator.config import Config, ConfigError, load_config
from coordinator.main import run
from tests.support import (
    REPO_ROOT,
    ConsulAgent,
    EtcdServer,
    ManagedProcess,
    free_port,
    http_get_json,
    wait_until,
)

# =========================================================================== configuration


def test_flags_beat_environment_beat_the_toml_file(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(
        '[coordinator]\ncluster = "fromfile"\nhttp-port = 9001\ntoken = "filetoken"\n'
        'leader_ttl = 6\n[coordinator.settings]\nreplicas = 2\n'
    )
    env = {"SLOTKEEPER_HTTP_PORT": "9002", "SLOTKEEPER_TOKEN": "envtoken"}
    c = load_config(["--config", str(toml), "--token", "flagtoken", "--set", "pause=true"], env)
    assert (c.cluster, c.http_port, c.token, c.leader_ttl) == ("fromfile", 9002, "flagtoken", 6)
    settings = c.settings()
    assert settings is not None and (settings.replicas, settings.pause) == (2, True)
    assert c.policy().initial_settings == settings
    assert c.api_url == "http://127.0.0.1:9002"
    assert Config().settings() is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cluster", "bad name"], "cluster name"),
        (["--http-port", "0"], "http-port"),
        (["--leader-ttl", "1"], "leader-ttl"),
        (["--leader-ttl", "2", "--etcd-timeout", "1"], "exceeds the lease TTL"),
        (["--set", "replicas=-1"], "replicas"),
        (["--set", "nonsense"], "key=value"),
        (["--log-level", "loud"], "log-level"),
    ],
)
def test_bad_configuration_is_refused_with_a_message(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(argv, {})


def test_run_exits_2_on_bad_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--http-port", "70000"]) == 2
    assert "http-port" in capsys.readouterr().err


# =========================================================================== the process


def test_the_process_leads_registers_and_stops_cleanly(
    etcd: EtcdServer, consul: ConsulAgent, tmp_path: Path
) -> None:
    port = free_port()
    argv = [
        sys.executable, "-c",
        "import sys; from coordinator.main import run; sys.exit(run(sys.argv[1:]))",
        "--cluster", "proc", "--etcd", etcd.endpoint, "--consul", consul.http_addr,
        "--http-port", str(port), "--instance-id", "proc-1", "--leader-ttl", "2",
        "--etcd-timeout", "0.5", "--set", "bootstrap_primaries=1", "--set", "replicas=0",
    ]
    proc = ManagedProcess(argv=argv, log_path=tmp_path / "coordinator.log", cwd=REPO_ROOT)
    proc.start()
    try:
        url = f"http://127.0.0.1:{port}"
        proc.wait_ready(lambda: http_get_json(f"{url}/health")["role"] == "leader", 15,
                        "the coordinator to lead")
        wait_until(lambda: etcd.etcdctl("get", "--print-value-only", "/slotkeeper/proc/settings"),
                   timeout=5, what="initial settings")
        settings = json.loads(etcd.etcdctl("get", "--print-value-only", "/slotkeeper/proc/settings"))
        assert (settings["bootstrap_primaries"], settings["replicas"]) == (1, 0)
        leader = json.loads(etcd.etcdctl("get", "--print-value-only",
                                         "/slotkeeper/proc/coordinator/leader"))
        assert (leader["id"], leader["api"]) == ("proc-1", url)

        def registered() -> list[dict[str, object]]:
            got: list[dict[str, object]] = http_get_json(
                f"{consul.url}/v1/catalog/service/slotkeeper-coordinator")
            return [s for s in got if s["ServiceID"] == "proc-1"]

        svc = wait_until(registered, timeout=10, what="consul registration")[0]
        assert svc["ServicePort"] == port
        with urllib.request.urlopen(f"{url}/metrics", timeout=2) as resp:
            assert b"slotkeeper_coordinator_leader 1.0" in resp.read()

        proc.popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert proc.popen.wait(10) == 0  # type: ignore[union-attr]
        assert etcd.etcdctl("get", "/slotkeeper/proc/coordinator/leader") == ""  # resigned
        assert not registered()
    finally:
        proc.kill()
