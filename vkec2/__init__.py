"""vkec2's fleet side: the layered core (domain, store, EC2 gateway, agent client, use cases) and the CLI.

Everything the producer and the workers have in common lives here, in the layers drawn in
docs/architecture.md. One process-wide setting is made on import, because it must precede the
first ``import grpc``: gRPC's fork support, so that a process forked after using gRPC (Celery's
prefork pool, or any worker that forks) shuts the inherited gRPC core down in the child and starts
afresh instead of sharing the parent's sockets ("Wrong file descriptor generation"). An operator's
own ``GRPC_ENABLE_FORK_SUPPORT`` wins.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "true")
