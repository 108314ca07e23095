"""Drain and move-shard decisions (coordinator/drain.py), step by step on tables."""

from __future__ import annotations

from typing import Any

from clusterstate.topology import Health, NodeState, Role
from coordinator.drain import JoinMembers, LeaveMembers, StartTransfer
from coordinator.intents import Intent, IntentKind, IntentState
from coordinator.planner import Plan
from tests.test_planner import NOW, N, S, healthy


def _intent(**kw: Any) -> Intent:
    base: dict[str, Any] = {"id": f"{int(NOW * 1000):013d}-0000000a", "kind": IntentKind.MOVE,
                            "created": NOW, "updated": NOW}
    return Intent(**{**base, **kw})


def _only(p: Plan, kind: type) -> Any:
    found = [a for a in p.actions if isinstance(a, kind)]
    assert len(found) == 1, (p.actions, p.notes)
    return found[0]


def _cluster() -> Any:
    """Shard 1: primary 10, replica 11 (zone a / b); spares 40 (zone c) and 41 (zone a)."""
    c = healthy(shards=1, replicas=1, zones=("a", "b"))
    c.node(40, zone="c").status(40).node(41, zone="a").status(41)
    return c


def test_drain_of_a_replica_joins_the_best_spare_first_then_the_node_leaves() -> None:
    c = _cluster()
    c.intent(_intent(node=N(11), shard=S(1)))
    join = _only(c.plan(), JoinMembers)
    new = join.writes.node(N(40))  # zone c: away from the primary's zone a
    assert (new.role, new.state, new.health, new.shard) == (
        Role.REPLICA, NodeState.RECOVERING, Health.LOADING, S(1))
    assert new.replica_id and join.writes.replica_ids == (new.replica_id,)
    assert join.writes.shard(S(1)).replicas == (N(11), N(40))
    (running,) = join.writes.intents
    assert running.state is IntentState.RUNNING and running.nodes == (N(40),)
    assert running.leaving == (N(11),)

    # the new replica is still loading: the node stays
    c.node(40, zone="c", shard=1, role=Role.REPLICA, state=NodeState.RECOVERING,
           health=Health.LOADING).shard(1, 10, (11, 40)).intent(running)
    p = c.plan()
    assert not [a for a in p.actions if isinstance(a, LeaveMembers)]
    assert any("waiting for" in n for n in p.notes), p.notes

    # caught up: the drained node leaves as a hidden spare, its replica_id retired
    c.node(40, zone="c", shard=1, role=Role.REPLICA, state=NodeState.STANDBY)
    leave = _only(c.plan(), LeaveMembers)
    gone = leave.writes.node(N(11))
    assert (gone.role, gone.shard, gone.hidden, gone.replica_id) == (Role.NONE, "", True, 0)
    assert leave.writes.shard(S(1)).replicas == (N(40),)
    assert leave.writes.intents[0].state is IntentState.DONE


def test_drain_of_the_primary_transfers_leadership_before_it_leaves() -> None:
    c = _cluster()
    running = _intent(node=N(10), shard=S(1), state=IntentState.RUNNING, nodes=(N(40),),
                      leaving=(N(10),), deadline=NOW + 600)
    c.node(40, zone="c", shard=1, role=Role.REPLICA, state=NodeState.STANDBY)
    c.shard(1, 10, (11, 40)).intent(running)
    start = _only(c.plan(), StartTransfer)
    transfer, move = sorted(start.writes.intents, key=lambda i: i.kind.value)
    assert (transfer.kind, move.kind) == (IntentKind.FAILOVER, IntentKind.MOVE)
    assert transfer.target == N(40) and transfer.shard == S(1)
    assert move.child == transfer.id and transfer.id > move.id  # sorts after its parent

    # while the transfer runs the move waits; once 40 is the primary, 10 leaves
    c.intent(move).intent(transfer.with_(state=IntentState.RUNNING))
    p = c.plan()
    assert not [a for a in p.actions if isinstance(a, (LeaveMembers, StartTransfer))]
    c.intent(transfer.with_(state=IntentState.DONE))
    c.shard(1, 40, (11, 10)).node(40, zone="c", shard=1, role=Role.PRIMARY,
                                  state=NodeState.ACTIVE).lease(1, 40)
    c.node(10, zone="a", shard=1, role=Role.REPLICA, state=NodeState.STANDBY)
    leave = _only(c.plan(), LeaveMembers)
    assert leave.writes.node(N(10)).role is Role.NONE
    assert leave.writes.shard(S(1)).primary == N(40)


def test_a_failed_transfer_fails_the_move_and_the_new_replica_stays() -> None:
    c = _cluster()
    c.node(40, zone="c", shard=1, role=Role.REPLICA, state=NodeState.STANDBY)
    c.shard(1, 10, (11, 40))
    child_id = f"{int(NOW * 1000):013d}-0000000b"
    c.intent(_intent(node=N(10), shard=S(1), state=IntentState.RUNNING, nodes=(N(40),),
                     leaving=(N(10),), child=child_id, attempts=1, deadline=NOW + 600))
    c.intent(Intent(id=child_id, kind=IntentKind.FAILOVER, shard=S(1), target=N(40),
                    state=IntentState.FAILED, message="did not catch up"))
    p = c.plan()
    (failed,) = [i for a in p.actions for i in a.writes.intents if i.kind is IntentKind.MOVE]
    assert failed.state is IntentState.FAILED and failed.error == "transfer_failed"
    assert not [a for a in p.actions if isinstance(a, LeaveMembers)]


def test_move_shard_replaces_every_member_and_checks_the_nodes() -> None:
    c = _cluster()
    c.intent(_intent(shard=S(1), nodes=(N(41), N(40))))
    join = _only(c.plan(), JoinMembers)
    (running,) = join.writes.intents
    assert running.leaving == (N(10), N(11)) and running.nodes == (N(41), N(40))

    c = _cluster()
    c.intent(_intent(shard=S(1), nodes=(N(11),)))  # a member, not a spare
    (failed,) = [i for a in c.plan().actions for i in a.writes.intents]
    assert (failed.state, failed.error) == (IntentState.FAILED, "not_eligible")


def test_drain_of_a_spare_hides_it_and_no_spare_means_no_drain() -> None:
    c = _cluster()
    c.intent(_intent(node=N(40)))
    leave = _only(c.plan(), LeaveMembers)
    assert leave.writes.node(N(40)).hidden and leave.writes.intents[0].state is IntentState.DONE

    c = healthy(shards=1, replicas=1)
    c.intent(_intent(node=N(11), shard=S(1)))
    (failed,) = [i for a in c.plan().actions for i in a.writes.intents]
    assert (failed.state, failed.error) == (IntentState.FAILED, "no_spare")
