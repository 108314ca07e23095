"""Scale out and scale in as a client sees them (DESIGN §5), on the whole stack.

``slotkeeper up --primaries 3 --replicas 1 --spares 2`` in a temporary directory;
1,000,000 keys of 16 bytes (100,000 with --quick) are loaded straight into the
primaries. A client thread — redis-py ``RedisCluster``, its own retries of
MOVED / ASK / TRYAGAIN — then runs at a steady rate (about 1,000 ops/s): it SETs
a random key to a new value and GETs a random key it wrote before, checking that
the read returns the last acknowledged value (a stale read otherwise). Meanwhile:

1. ``POST /v1/rebalance {kind: scale_out}``: the two spares become a fourth
   shard and 4,096 slots move to it; the run ends when every migration of the
   plan is DONE and the new primary is ACTIVE;
2. ``POST /v1/rebalance {kind: scale_in, shard: <the new one>}``: its slots move
   back and the shard dissolves (its nodes ONLINE spares again).

Printed per step: total time, keys/s moved (the migrations' ``keys_moved`` over
the time), the longest window in which a slot refused writes as the data nodes
measured it (``SLOTKEEPER TRANSFER-WINDOWS``: the source's mark until writes
resume, target ≤ 100 ms; p50 and p99 beside it), the longest write as the client
saw it (a write in a window is held by the source until it ends), client errors not
retried by redis-py (target 0) and, after the step, every key read back from the
owners: lost or stale values (target 0).
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

from clusterstate.slots import key_slot

from .failover import BenchError, Stack, wait_for
from .probe import percentile
from .report import Context, Row, Target

VALUE = b"x" * 16
RATE = 1000.0  # client ops/s (half writes, half reads)


def _owners(stack: Stack) -> list[tuple[int, int, int]]:
    """(first slot, last slot, client port) of every slot range's primary."""
    import redis

    r = redis.Redis(host="127.0.0.1", port=stack.port(0))
    try:
        doc = r.cluster("slots")
    finally:
        r.close()
    if isinstance(doc, dict):  # redis-py's parsed form
        return [(int(rng[0]), int(rng[1]), int(info["primary"][1])) for rng, info in doc.items()]
    return [(int(lo), int(hi), int(nodes[0][1])) for lo, hi, *nodes in doc]


def _by_port(stack: Stack, keys: list[bytes]) -> dict[int, list[int]]:
    owners = _owners(stack)
    port_of = [0] * 16384
    for lo, hi, port in owners:
        for s in range(lo, hi + 1):
            port_of[s] = port
    out: dict[int, list[int]] = {}
    for i, k in enumerate(keys):
        out.setdefault(port_of[key_slot(k)], []).append(i)
    return out


def load(stack: Stack, keys: list[bytes]) -> None:
    import redis

    for port, idx in _by_port(stack, keys).items():
        r = redis.Redis(host="127.0.0.1", port=port)
        for i in range(0, len(idx), 5000):
            pipe = r.pipeline(transaction=False)
            for j in idx[i:i + 5000]:
                pipe.set(keys[j], VALUE)
            pipe.execute()
        r.close()


def read_all(stack: Stack, keys: list[bytes]) -> list[bytes | None]:
    import redis
    import redis.cluster

    out: list[bytes | None] = [None] * len(keys)
    redirected: list[int] = []  # a node whose view is a step behind (CLUSTER SLOTS) said MOVED
    for port, idx in _by_port(stack, keys).items():
        r = redis.Redis(host="127.0.0.1", port=port)
        for i in range(0, len(idx), 5000):
            chunk = idx[i:i + 5000]
            pipe = r.pipeline(transaction=False)
            for j in chunk:
                pipe.get(keys[j])
            for j, v in zip(chunk, pipe.execute(raise_on_error=False), strict=True):
                if isinstance(v, redis.exceptions.MovedError):
                    redirected.append(j)
                elif isinstance(v, Exception):
                    raise v
                else:
                    out[j] = v
        r.close()
    if redirected:
        rc = redis.cluster.RedisCluster(host="127.0.0.1", port=stack.port(0))
        try:
            for j in redirected:
                out[j] = rc.get(keys[j])
        finally:
            rc.close()
    return out


class Client(threading.Thread):
    """Steady writes and checked reads through redis-py's cluster client."""

    def __init__(self, stack: Stack, keys: list[bytes]) -> None:
        super().__init__(daemon=True)
        import redis.cluster

        self.rc = redis.cluster.RedisCluster(host="127.0.0.1", port=stack.port(0))
        self.keys = keys
        self.acked: dict[int, bytes] = {}
        self.unsure: dict[int, set[bytes]] = {}  # writes whose outcome is unknown
        self.write_s: list[float] = []
        self.errors: list[str] = []
        self.stale = 0
        self.halt = threading.Event()
        self.seq = 0

    def mark(self) -> tuple[int, int, int]:
        return len(self.write_s), len(self.errors), self.stale

    def run(self) -> None:
        period = 2 / RATE
        nxt = time.monotonic()
        while not self.halt.is_set():
            nxt += period
            i = random.randrange(len(self.keys))
            self.seq += 1
            value = b"w%d" % self.seq
            t0 = time.monotonic()
            try:
                self.rc.set(self.keys[i], value)
                self.write_s.append(time.monotonic() - t0)
                self.acked[i] = value
                self.unsure.pop(i, None)
            except Exception as exc:  # not retried by redis-py
                self.errors.append(f"SET: {exc!r}")
                self.unsure.setdefault(i, set()).add(value)
            if self.acked:
                j = random.choice(list(self.acked)) if len(self.acked) < 64 else \
                    random.choice(self._recent())
                try:
                    got = self.rc.get(self.keys[j])
                    if got != self.acked[j] and got not in self.unsure.get(j, ()):
                        self.stale += 1
                except Exception as exc:
                    self.errors.append(f"GET: {exc!r}")
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                nxt = time.monotonic()

    def _recent(self) -> list[int]:
        return list(self.acked)[-64:]


def wait_plan(stack: Stack, ids: list[str], timeout: float) -> dict[str, Any]:
    wanted = set(ids)

    def finished() -> dict[str, Any] | None:
        doc = stack.get("/v1/migrations")
        mine = [m for m in doc["migrations"] if m["id"] in wanted]
        if len(mine) == len(wanted) and all(
                m["state"] in ("DONE", "FAILED", "CANCELLED") for m in mine):
            return {"done": sum(m["state"] == "DONE" for m in mine), "total": len(mine),
                    "keys": sum(int(m.get("keys_moved") or 0) for m in mine)}
        return None

    result: dict[str, Any] = wait_for("the plan's migrations to finish", finished,  # type: ignore[arg-type]
                                      timeout, interval=0.1)
    return result


def refusal_windows(stack: Stack, reset: bool = False) -> list[float]:
    """Every data node's write-refusal windows (``SLOTKEEPER TRANSFER-WINDOWS``), in ms:
    per move, from the source's mark to the moment writes resume (handoff, new view
    or abort). A node that does not answer (a spare not started) is skipped."""
    import redis

    out: list[float] = []
    for i in range(stack.nodes_count):
        r = redis.Redis(host="127.0.0.1", port=stack.admin_port(i), socket_timeout=5)
        try:
            args = ("SLOTKEEPER", "TRANSFER-WINDOWS") + (("RESET",) if reset else ())
            out += [int(us) / 1000 for us in r.execute_command(*args)]
        except redis.exceptions.ConnectionError:
            continue
        finally:
            r.close()
    return out


def step(ctx: Context, stack: Stack, client: Client, keys: list[bytes], label: str,
         body: dict[str, Any], expect_shards: int) -> list[Row]:
    refusal_windows(stack, reset=True)
    writes0, errors0, stale0 = client.mark()
    t0 = time.monotonic()
    status, doc = stack.write("POST", "/v1/rebalance", body)
    if status != 202:
        raise BenchError(f"POST /v1/rebalance {body} refused: {status} {doc}")
    result = wait_plan(stack, doc["migrations"], timeout=1800)
    wait_for(f"{expect_shards} shards, every primary ACTIVE",
             lambda: len(stack.get("/v1/cluster")["shards"]) == expect_shards
             and all(n["state"] in ("ACTIVE", "STANDBY", "ONLINE")
                     for n in stack.get("/v1/cluster")["nodes"]), 120, interval=0.1)
    took = time.monotonic() - t0
    windows = sorted(refusal_windows(stack))
    writes = client.write_s[writes0:]
    errors = client.errors[errors0:]
    ctx.say(f"  {label}: {result['done']}/{result['total']} migrations done, "
            f"{result['keys']:,} keys in {took:.1f} s; {len(writes)} client writes, "
            f"{len(errors)} errors" + (f" (first: {errors[0]})" if errors else ""))
    client.halt.set()
    client.join(timeout=10)
    values = read_all(stack, keys)
    lost = 0
    for i, v in enumerate(values):
        want = client.acked.get(i, VALUE)
        if v != want and v not in client.unsure.get(i, ()):
            lost += 1
    stale = client.stale - stale0
    longest = max(writes, default=0.0) * 1000
    return [
        Row(f"{label}: total time", took, None, "s", show_ratio=False,
            note=f"{result['done']}/{result['total']} migrations done"),
        Row(f"{label}: keys moved per second", result["keys"] / took if took else 0, None,
            "rps", show_ratio=False, note=f"{result['keys']:,} keys"),
        Row(f"{label}: longest write-refusal window of a slot (data nodes)",
            max(windows, default=0.0), None, "ms", target=Target("<=", 100, on="ours"),
            note=f"p50 {percentile(windows, 0.5):.1f} ms, p99 {percentile(windows, 0.99):.1f} ms "
            f"over {len(windows)} moves: source's mark → writes resume (handoff)"),
        Row(f"{label}: longest client write", longest, None, "ms",
            note=f"p99 {percentile(sorted(w * 1000 for w in writes), 0.99):.1f} ms over "
            f"{len(writes):,} writes at ~{RATE / 2:.0f}/s; a write to a slot in its window is held "
            "by the source until the window ends (TRYAGAIN only after 1 s)"),
        Row(f"{label}: client errors not retried", float(len(errors)), None, "",
            target=Target("<=", 0, on="ours"), show_ratio=False,
            note=errors[0][:120] if errors else ""),
        Row(f"{label}: lost or stale values (all keys read back, checked reads)",
            float(lost + stale), None, "", target=Target("<=", 0, on="ours"), show_ratio=False,
            note=f"lost {lost}, stale reads {stale}"),
    ]


def run(ctx: Context) -> list[Row]:
    n = 100_000 if ctx.quick else 1_000_000
    keys = [b"key:%d" % i for i in range(n)]
    stack = Stack(primaries=3, replicas=1, spares=2, prefix="skbench-migration-")
    rows: list[Row] = []
    try:
        stack.start()
        stack.wait_whole()
        t0 = time.monotonic()
        load(stack, keys)
        ctx.say(f"loaded {n:,} keys × 16 B in {time.monotonic() - t0:.1f} s")
        before = {s["id"] for s in stack.get("/v1/cluster")["shards"]}
        client = Client(stack, keys)
        client.start()
        rows += step(ctx, stack, client, keys, "scale out 3 → 4 shards",
                     {"kind": "scale_out"}, 4)
        stack.wait_whole()
        new = next(s["id"] for s in stack.get("/v1/cluster")["shards"] if s["id"] not in before)
        client2 = Client(stack, keys)
        client2.acked, client2.unsure = client.acked, client.unsure
        client2.start()
        rows += step(ctx, stack, client2, keys, "scale in 4 → 3 shards",
                     {"kind": "scale_in", "shard": new}, 3)
    except Exception as exc:
        rows.append(Row("scale out / scale in", None, None, error=str(exc)[:300]))
    finally:
        keep = bool(os.environ.get("SKBENCH_KEEP"))
        stack.stop(keep_logs=keep)
        if keep:
            ctx.say(f"logs kept in {stack.dir}")
    return rows

