"""The vkec2 agent: the gRPC server that runs one pod's workload on its EC2 instance.

It sits at the far end of the picture (worker --gRPC/mTLS--> agent) and depends on nothing of the
fleet: only the standard library, grpcio, grpcio-health-checking and protobuf. ``cli`` is the
entry point (``python -m agent`` / ``vkec2 agent``), ``server`` serves a runtime in the bootstrap,
insecure or mTLS mode, ``service`` holds the gRPC servicers, ``runtime_process`` really runs the
pod's commands, and ``bootstrap`` holds identity and the mTLS switch. Everything simulated (the
simulated runtime, forced states and fault injection, the simulator that hosts thousands of virtual
agents in one process) lives in ``agent.sim``, which the real agent never imports.
"""

__version__ = "0.1.0"
