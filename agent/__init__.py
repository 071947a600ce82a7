"""The vkec2 agent: the gRPC server that runs one pod's workload on its EC2 instance.

It sits at the far end of the picture (worker --gRPC/mTLS--> agent) and depends on nothing of the
fleet: only the standard library, grpcio, grpcio-health-checking and protobuf. ``server`` is the
entry point (``python -m agent`` / ``vkec2 agent``), ``runtime_process`` really runs the pod's
commands, ``runtime_sim`` simulates them, ``bootstrap`` holds identity and the mTLS switch, and
``simulator`` hosts thousands of virtual agents in one process for local runs and tests.
"""

__version__ = "0.1.0"
