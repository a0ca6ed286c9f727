"""End-to-end benchmark of the whole system under load (docs/benchmarks.md, "End-to-end").

``load`` is the load generator (asyncio + websockets), ``probes`` reads process and Redis
counters, ``targets`` starts what is measured (the cluster, the bare Daphne echo), ``run`` is
the command line and ``plots`` draws docs/bench/*.png from its results.
"""
