"""The operator commands against a real coordinator API (and a real etcd).

The CLI is synchronous (urllib); it runs in a thread so the servers in this
process keep serving.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coordinator import cli
from tests.support import EtcdServer, free_port
from tests.test_coordinator_api import TOKEN, Running, fresh, running
from tests.test_planner import N, S, healthy


@pytest.fixture
async def api(etcd: EtcdServer) -> AsyncIterator[Running]:
    async with running(etcd, fresh(healthy(shards=2, replicas=1))) as r:
        yield r


async def sk(command: str, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await asyncio.to_thread(cli.run, command, list(argv), out)
    return code, out.getvalue()


def flags(api: Running, url: str | None = None) -> list[str]:
    return ["--coordinator", url or api.url, "--token", TOKEN]


async def test_status_nodes_shards_tables_and_json(api: Running) -> None:
    code, text = await sk("status", *flags(api))
    assert code == 0
    first = text.splitlines()[0]
    assert first.startswith(f"cluster {api.cluster.keys.cluster}  epoch 10  leader coord-a")
    assert "2 shards, 4 nodes: 4 online" in text
    assert "SHARD" in text and "0-8191" in text and N(10)[:8] in text
    code, text = await sk("nodes", *flags(api))
    lines = text.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["NODE", "ADDRESS", "ZONE", "SHARD"]
    assert len(lines) == 5 and any("primary" in line and "ACTIVE" in line for line in lines)
    code, text = await sk("shards", *flags(api), "--json")
    assert code == 0 and {s["id"] for s in json.loads(text)["shards"]} == {S(1), S(2)}
    code, text = await sk("history", *flags(api))
    assert code == 0 and text.split() == ["EPOCH", "TIME", "KIND", "WHY"]


async def test_hide_unhide_tag_with_prefixes_and_history(api: Running) -> None:
    code, text = await sk("hide", *flags(api), N(11)[:6])
    assert code == 0, text
    assert text.strip() == f"hide node {N(11)[:8]} (epoch 11)"
    code, text = await sk("nodes", *flags(api), "--json")
    assert {n["id"]: n["hidden"] for n in json.loads(text)["nodes"]}[N(11)] is True
    code, text = await sk("unhide", *flags(api), N(11))
    assert code == 0
    code, text = await sk("tag", *flags(api), N(21)[:10], "--zone", "eu-1", "--priority", "4",
                          "--nofailover", "yes")
    assert code == 0 and "zone=eu-1" in text
    code, text = await sk("history", *flags(api), "--limit", "3")
    rows = text.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["13", "12", "11"]


async def test_refusals_exit_non_zero_with_the_apis_message(api: Running) -> None:
    code, _ = await sk("hide", *flags(api), N(10))
    assert code == cli.EXIT_FAILED
    code, text = await sk("hide", *flags(api), N(10), "--json")
    assert code == 1 and json.loads(text)["code"] == "primary_owns_slots"
    code, _ = await sk("hide", *flags(api), "ffff")
    assert code == cli.EXIT_FAILED  # no such node
    code, _ = await sk("hide", "--coordinator", api.url, "--token", "wrong", N(11))
    assert code == cli.EXIT_FAILED
    code, _ = await sk("hide", *flags(api), N(11), "--expected-epoch", "2")
    assert code == cli.EXIT_FAILED
    code, _ = await sk("tag", *flags(api), N(11))
    assert code == cli.EXIT_USAGE
    code, _ = await sk("hide", *flags(api))
    assert code == cli.EXIT_USAGE
    assert await sk("frobnicate") == (cli.EXIT_USAGE, "")


async def test_refusal_messages_on_stderr(api: Running, capsys: pytest.CaptureFixture[str]) -> None:
    code = await asyncio.to_thread(cli.run, "hide", [*flags(api), N(10)], io.StringIO())
    assert code == 1
    err = capsys.readouterr().err
    assert "slotkeeper hide:" in err and "owns slots" in err and "409 primary_owns_slots" in err


async def test_writes_sent_to_a_standby_reach_the_leader(api: Running) -> None:
    code, text = await sk("hide", *flags(api, api.standby_url), N(21))
    assert code == 0, text
    code, text = await sk("nodes", *flags(api, api.standby_url), "--json")
    assert {n["id"]: n["hidden"] for n in json.loads(text)["nodes"]}[N(21)] is True


async def test_pause_resume_and_settings(api: Running) -> None:
    code, text = await sk("pause", *flags(api))
    assert code == 0 and text.startswith("paused")
    code, text = await sk("status", *flags(api))
    assert "PAUSED" in text.splitlines()[0]
    code, text = await sk("resume", *flags(api))
    assert code == 0
    code, text = await sk("settings", *flags(api))
    assert code == 0 and "max_lag_bytes" in text and "(revision" in text
    code, text = await sk("settings", *flags(api), "max_lag_bytes=2048", "hide_while_loading=false")
    assert code == 0
    code, text = await sk("settings", *flags(api), "--json")
    s = json.loads(text)["settings"]
    assert (s["max_lag_bytes"], s["hide_while_loading"]) == (2048, False)
    code, _ = await sk("settings", *flags(api), "replicas=-1")
    assert code == cli.EXIT_FAILED
    code, _ = await sk("settings", *flags(api), "replicas=3", "--expected-revision", "1")
    assert code == cli.EXIT_FAILED


async def test_failover_that_cannot_finish_in_time_exits_4(api: Running) -> None:
    code, text = await sk("failover", *flags(api), S(1)[:8], "--target", N(11)[:8], "--wait", "0.5")
    assert code == cli.EXIT_PENDING, text
    assert "still under way" in text


async def test_the_coordinator_is_found_from_env_or_the_up_file(
    api: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLOTKEEPER_COORDINATOR", raising=False)
    monkeypatch.delenv("SLOTKEEPER_TOKEN", raising=False)
    code, _ = await sk("status")
    assert code == cli.EXIT_USAGE
    (tmp_path / cli.UP_FILE).write_text(json.dumps({"coordinator": api.url, "token": TOKEN}))
    code, text = await sk("hide", N(11))
    assert code == 0, text
    (tmp_path / cli.UP_FILE).unlink()
    monkeypatch.setenv("SLOTKEEPER_COORDINATOR", api.url.removeprefix("http://"))
    monkeypatch.setenv("SLOTKEEPER_TOKEN", TOKEN)
    code, _ = await sk("unhide", N(11))
    assert code == 0


async def test_an_unreachable_coordinator_is_said_plainly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code = await asyncio.to_thread(cli.run, "status", ["--coordinator", url], io.StringIO())
    assert code == cli.EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert f"cannot reach the coordinator at {url}" in err
