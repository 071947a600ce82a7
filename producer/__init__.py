"""The producer: vkec2 as one virtual node in Kubernetes, or a standalone pod source.

One producer process is one virtual node. In Kubernetes mode it registers the Node, keeps its
Lease, watches the pods bound to it and turns them into desired specs in Redis plus
``vkec2.pods.*`` tasks for the worker fleet, and turns the node's status outbox back into
``pods/status`` writes, Events and the final pod deletion. In standalone mode (``--manifests DIR``)
the pods come from a directory of YAML manifests instead, and status stays in Redis. It is the only
part of vkec2 that talks to Kubernetes.
"""
