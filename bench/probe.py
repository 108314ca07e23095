"""A light, paced GET latency probe: ``python -m bench.probe PORT [options]`` prints JSON.

Unlike redis-benchmark (closed loop, as fast as the server goes, so its latency mostly
tracks the CPU the server gets), the probe sends GETs on a fixed schedule from a few
connections (default 8 × 500/s = 4,000 GET/s): latency then shows event-loop stalls
(fork, copy-on-write faults, work done in the loop), not saturation.

Figures, in ms: service latency (send → reply) percentiles, and ``p99_sched``, measured
from the scheduled send time, which also counts the requests a stall delayed.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import select
import sys
import time

import hiredis

from .client import Client, encode


def percentile(sorted_xs: list[float], q: float) -> float:
    if not sorted_xs:
        return float("nan")
    return sorted_xs[min(len(sorted_xs) - 1, int(q * len(sorted_xs)))]


def probe(port: int, keys: int, seconds: float, conns: int, rate: float) -> dict[str, object]:
    """One thread, ``conns`` connections with at most one GET in flight each, sent on schedule.

    ``select`` (microsecond timeout, unlike epoll's milliseconds) waits for the next reply
    or the next send time, whichever comes first.
    """
    rng = random.Random()
    interval = 1.0 / rate
    clients = [Client(port, timeout=30) for _ in range(conns)]
    service: list[float] = []
    sched: list[float] = []
    errors: list[str] = []
    start = time.perf_counter() + 0.2  # everyone connected before the first send
    stop = start + seconds
    nxt = [start + k * interval / conns for k in range(conns)]  # spread over the interval
    sent: list[tuple[float, float] | None] = [None] * conns  # (scheduled, sent) of the GET in flight
    by_sock = {c.sock: k for k, c in enumerate(clients)}
    gc.disable()  # no collector pauses in the measurement (nothing here makes cycles)
    try:
        while True:
            now = time.perf_counter()
            for k, c in enumerate(clients):
                if sent[k] is None and nxt[k] <= now and nxt[k] < stop:
                    c.sock.sendall(encode("GET", b"key:%012d" % rng.randrange(keys)))
                    sent[k] = (nxt[k], time.perf_counter())
                    nxt[k] += interval
            busy = [c.sock for k, c in enumerate(clients) if sent[k] is not None]
            waiting = [nxt[k] for k in range(conns) if sent[k] is None and nxt[k] < stop]
            if not busy and not waiting:
                break
            timeout = max(0.0, min(waiting) - time.perf_counter()) if waiting else 1.0
            readable, _, _ = select.select(busy, [], [], timeout)
            for sock in readable:
                k = by_sock[sock]
                c = clients[k]
                c.reader.feed(sock.recv(65536))
                reply = c.reader.gets()
                if reply is False:
                    continue
                t1 = time.perf_counter()
                scheduled, t0 = sent[k]  # type: ignore[misc]
                sent[k] = None
                if isinstance(reply, hiredis.ReplyError):
                    errors.append(str(reply))
                service.append(t1 - t0)
                sched.append(t1 - scheduled)
    finally:
        gc.enable()
        for c in clients:
            c.close()
    service.sort()
    sched.sort()
    ms = 1000.0
    return {
        "requests": len(service),
        "rps": len(service) / seconds,
        "p50": percentile(service, 0.50) * ms,
        "p99": percentile(service, 0.99) * ms,
        "p999": percentile(service, 0.999) * ms,
        "max": (service[-1] if service else float("nan")) * ms,
        "p99_sched": percentile(sched, 0.99) * ms,
        "errors": sorted(set(errors))[:5],
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.probe")
    p.add_argument("port", type=int)
    p.add_argument("--keys", type=int, default=1_000_000, help="GET key:0 … key:<keys-1>")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--conns", type=int, default=8)
    p.add_argument("--rate", type=float, default=500.0, help="GETs per second per connection")
    a = p.parse_args(argv)
    print(json.dumps(probe(a.port, a.keys, a.seconds, a.conns, a.rate)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
