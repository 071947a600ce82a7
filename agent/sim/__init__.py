"""Simulation for the agent: the simulated runtime, forced states and faults, and the multi-agent simulator.

Nothing of the real agent imports this package (an import-linter contract says so): the agent's
command line (:mod:`agent.cli`) brings it in only for ``--runtime sim`` or ``--enable-simulation``,
and ``vkec2 agent-sim`` runs :mod:`agent.sim.simulator`. ``runtime`` is the clock-driven pod (with
``exec_session`` and ``random_status``), ``control`` the forced state and the runtime wrapper that
reports it, ``faults`` the interceptor that answers as it says, ``service`` the Simulation service
and the extension that serves both, and ``inventory`` the simulator's view of EC2 (the only place
boto3 is imported, lazily).
"""
