"""The answers of the sidecar's HTTP probes (DESIGN §7), pure: ``Facts`` in, status
code and JSON body out. ``sidecar.api`` only routes requests here.

| probe | 200 when |
|---|---|
| ``/health`` | the data node answers, etcd is reachable (lease renewed) and there is no registry conflict; a loading replica or a spare is healthy |
| ``/primary`` | this node is the writable holder of ``leases/<shard>`` with a live write permit |
| ``/replica?lag=<bytes>`` | an online, non-hidden replica, at most ``lag`` bytes behind its primary's last published offset (when ``lag`` is given) |
| ``/liveness`` | the sidecar's loop is running (not stalled) |
| ``/readiness`` | the node can take its role's traffic: a writable primary or an online, non-hidden replica |

Every 503 body says why (``reason``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clusterstate.topology import Health, Role

from .facts import Facts, observed_health


@dataclass(frozen=True, slots=True)
class Answer:
    code: int
    body: dict[str, Any]


def _ok(f: Facts, **extra: Any) -> Answer:
    return Answer(200, {"status": "ok", "role": f.role_applied.value,
                        "health": observed_health(f).value, **extra})


def _no(reason: str, **extra: Any) -> Answer:
    return Answer(503, {"status": "unavailable", "reason": reason, **extra})


def health(f: Facts) -> Answer:
    if f.shutting_down:
        return _no("shutting down")
    if not f.datanode_up:
        return _no(f"data node not answering: {f.datanode_error or 'not connected yet'}")
    if f.degraded or not f.etcd_up:
        return _no(f"degraded: etcd unreachable ({f.etcd_error or 'no answer'}); serving the "
                   "last known view, fenced", degraded=True)
    if f.conflict:
        return _no(f"conflict: {f.conflict}")
    return _ok(f, epoch=f.epoch_applied)


def primary(f: Facts) -> Answer:
    if f.writable:
        return _ok(f, shard=f.shard)
    refusal = f.writer_refusal or "write permit expired"
    return _no(f"not the writable primary: {refusal}")


def replica(f: Facts, max_lag: int | None) -> Answer:
    if not f.datanode_up:
        return _no("data node not answering")
    if f.role_applied is not Role.REPLICA:
        return _no(f"not a replica (role {f.role_applied.value})")
    if f.hidden:
        return _no("hidden")
    health_now = observed_health(f)
    if health_now is not Health.ONLINE:
        return _no(f"replica is {health_now.value}")
    lag = f.lag
    if max_lag is not None:
        if lag is None:
            return _no("lag unknown (no offset published by the primary yet)")
        if lag > max_lag:
            return _no(f"lag {lag} bytes exceeds {max_lag}", lag=lag)
    return _ok(f, lag=lag)


def liveness(f: Facts, loop_delay: float, max_delay: float = 5.0) -> Answer:
    if loop_delay > max_delay:
        return _no(f"event loop stalled for {loop_delay:.1f}s")
    return Answer(200, {"status": "ok"})


def readiness(f: Facts) -> Answer:
    if not f.datanode_up:
        return _no("data node not answering")
    if f.role_applied is Role.PRIMARY:
        return primary(f)
    if f.role_applied is Role.REPLICA:
        return replica(f, None)
    return _no("not a member of a shard")


def parse_lag(raw: str | None) -> int | None:
    """The ``lag`` query parameter: bytes, with an optional k/m/g (1024-based) suffix."""
    if raw is None or raw == "":
        return None
    text = raw.strip().lower()
    scale = 1
    for suffix, factor in (("kb", 1024), ("mb", 1024**2), ("gb", 1024**3),
                           ("k", 1024), ("m", 1024**2), ("g", 1024**3), ("b", 1)):
        if text.endswith(suffix):
            text, scale = text[: -len(suffix)], factor
            break
    value = int(text)
    if value < 0:
        raise ValueError("lag must be >= 0")
    return value * scale
