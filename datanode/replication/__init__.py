"""Replication: a primary streams its write effects to its replicas (full sync by a
forked child, then the stream with a replication id and a byte offset, partial
resyncs from a backlog), acknowledgements, WAIT and acknowledged writes, promotion.
See docs/replication.md."""

from .manager import Replication, Role, StaleInstruction

__all__ = ["Replication", "Role", "StaleInstruction"]
