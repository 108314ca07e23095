"""Write fencing: the write permit a sidecar grants its primary (DESIGN §3)."""

from __future__ import annotations

import time

import pytest
import redis

from tests.support import wait_until


def test_permit_grants_expire_and_renew(datanode) -> None:
    c, admin = datanode.client(), datanode.admin()
    c.flushall()
    try:
        assert admin.execute_command("SLOTKEEPER", "WRITE-PERMIT") == -1  # off: standalone
        assert c.set("k", "v")
        admin.execute_command("SLOTKEEPER", "WRITE-PERMIT", "FOR", "300")
        assert 0 < admin.execute_command("SLOTKEEPER", "WRITE-PERMIT") <= 300
        assert c.set("k", "v2")
        wait_until(lambda: admin.execute_command("SLOTKEEPER", "WRITE-PERMIT") == 0, timeout=5)
        with pytest.raises(redis.exceptions.ClusterDownError, match="fenced"):
            c.set("k", "v3")
        with pytest.raises(redis.exceptions.ClusterDownError):
            c.incr("n")
        assert c.get("k") == b"v2"  # reads continue while fenced
        assert c.info("stats")["fenced_writes"] >= 2
        # A fresh permit, given as an absolute monotonic deadline, re-enables writes.
        until = int((time.monotonic() + 5) * 1000)
        admin.execute_command("SLOTKEEPER", "WRITE-PERMIT", "UNTIL", until)
        assert c.set("k", "v4") and c.get("k") == b"v4"
        admin.execute_command("SLOTKEEPER", "WRITE-PERMIT", "REVOKE")
        with pytest.raises(redis.exceptions.ClusterDownError):
            c.set("k", "v5")
    finally:
        admin.execute_command("SLOTKEEPER", "WRITE-PERMIT", "OFF")
    assert c.set("k", "v6")


def test_permit_checked_inside_pipelines_and_transactions(datanode) -> None:
    c, admin = datanode.client(), datanode.admin()
    try:
        admin.execute_command("SLOTKEEPER", "WRITE-PERMIT", "REVOKE")
        pipe = c.pipeline(transaction=False)
        pipe.get("k").set("k", "x").get("k")
        results = pipe.execute(raise_on_error=False)
        assert isinstance(results[1], redis.exceptions.ClusterDownError)
        with c.pipeline(transaction=True) as tx:
            tx.set("k", "y")
            with pytest.raises(redis.exceptions.ResponseError):
                tx.execute()
    finally:
        admin.execute_command("SLOTKEEPER", "WRITE-PERMIT", "OFF")


def test_permit_command_is_admin_only_and_validated(datanode) -> None:
    with pytest.raises(redis.ResponseError, match="admin port"):
        datanode.client().execute_command("SLOTKEEPER", "WRITE-PERMIT", "OFF")
    with pytest.raises(redis.ResponseError, match="usage"):
        datanode.admin().execute_command("SLOTKEEPER", "WRITE-PERMIT", "SOMETIME")
