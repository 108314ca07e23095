"""The coordinator (``slotkeeper coordinator``): every cluster-wide decision, made
by the elected leader among several instances. See docs/coordinator.md.

Modules, pure decisions first, I/O after:

- ``view``         the cluster as one immutable, typed snapshot per cycle
- ``intents``      operator requests recorded in etcd for the loop
- ``actions``      what the planner decides: frozen values with their writes
- ``policy``       the coordinator's own tunables decisions depend on
- ``replication``  catch-up, lost primaries, promotion candidates (from statuses)
- ``placement``    zone- and host-aware placement; derived ids
- ``health``, ``bootstrap``, ``failover``, ``transfer``, ``repair``, ``manual``
                   the parts of the plan
- ``planner``      ``plan(view, settings, now) -> Plan``: all parts, in order
- ``reconciler``   one etcd transaction per action, guarded by the epoch
- ``leader``       the election on ``coordinator/leader``
- ``loop``         cycles: view, plan, apply, one sentence
- ``metrics``, ``documents``, ``openapi``, ``dashboard``, ``api``  the admin API
- ``config``, ``main``  the process; ``cli``  the operator commands
"""
