"""The kubelet API of the virtual node: what the API server dials for ``kubectl logs``, ``exec``, ``/pods``.

The producer serves HTTPS on the node's kubelet port (:mod:`.server`, with the TLS context of
:mod:`.tls`). ``/containerLogs/{namespace}/{pod}/{container}`` streams a container's log from the
agent on its instance as it arrives (:mod:`.logs`); ``/exec/{namespace}/{pod}[/{uid}]/{container}``
speaks the Kubernetes WebSocket remote-command protocol (``v5.channel.k8s.io``,
``v4.channel.k8s.io``) over :mod:`wsproto`, relaying to the agent's Exec stream
(:mod:`.exec`); over SPDY/3.1, as API servers dial kubelets, ``/exec``, ``/attach`` and
``/portForward`` are served by :mod:`.streaming` (framing in :mod:`.spdy`, streams in
:mod:`.spdy_conn`); ``/healthz`` answers ``ok`` and ``/pods`` is a PodList of this node's pods built
from the Redis records (:mod:`.pods`); ``/stats/summary``, ``/metrics/resource`` and ``/metrics``
report resource usage from a cached fan-out to the node's agents (:mod:`.stats`, :mod:`.summary`).
:mod:`.wire` holds the HTTP helpers and :mod:`.duplex` the
one-thread full-duplex I/O of a streaming connection. This is the one place the producer reads
from agents (design rule), through its own :class:`~vkec2.agent_client.AgentClient` per stream,
whose channel is closed to cancel the agent call when the client disconnects.
"""

from producer.kubelet.server import KubeletServer
from producer.kubelet.tls import serving_context

__all__ = ["KubeletServer", "serving_context"]
