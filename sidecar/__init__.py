"""The sidecar (``slotkeeper sidecar``): one per data node, on the same host.

It owns the node's identity in the control plane, its role at boot (DESIGN §4),
its etcd lease and write permit (§3), its Consul registration (§6), and applying
the served view and role the coordinator wrote to its data node (§1). It decides
nothing cluster-wide. See docs/sidecar.md.

Modules, by what they own (pure decisions first, I/O after):

- ``config``     the frozen settings (flags, environment, TOML)
- ``snapshot``   the local snapshot ``node.json``
- ``boot``       the role at boot: six rules, one pure function
- ``plan``       the steps that take the data node to a new view (pure)
- ``permit``     the write permit rule (pure)
- ``facts``      one frozen value of what is known; status record, health, Consul tags
- ``probes``     the HTTP probes' answers (pure)
- ``slotlease``  ``leases/<shard>``: decision (pure) and the two transactions
- ``transfer``   migrations this node carries out as the target primary
- ``admin``      the data node's admin port (RESP3 client)
- ``monitor``    data node liveness and replication facts
- ``lease``      the etcd lease and its keepalives
- ``watcher``    the cluster records, kept current by one watch
- ``status``     publishing ``status/<node_id>``
- ``applier``    the one actor that changes the data node
- ``registrar``  the Consul registration
- ``api``        the aiohttp endpoints
- ``process``    optional supervision of the data node process
- ``supervisor`` wiring, sessions, shutdown; ``main``: the entry point
"""
