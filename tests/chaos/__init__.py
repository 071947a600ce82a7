"""The chaos suite (``make chaos``, ``python -m tests.chaos``): pod lifecycles while faults are injected.

Real processes on loopback only — moto behind the AWS-like EC2 double, the agent simulator behind a
TCP forwarder that can partition it, a private Redis (or a Sentinel group), Celery workers, beat and
the standalone producer — run pods through create → Running → delete → gone while one scenario
after another kills, restarts, partitions and breaks them; after each scenario the invariants
(:mod:`tests.chaos.invariants`) are checked and a table is printed (:mod:`tests.chaos.report`).
See docs/reliability.md.
"""
