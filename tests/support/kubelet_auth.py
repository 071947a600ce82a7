"""A kubelet API with authentication on, in process, for the kubelet security tests and the fuzz suite.

:func:`secured_kubelet` starts the API double (which answers TokenReview and SubjectAccessReview),
a cluster CA whose certificates the server authenticates, and a
:class:`~producer.kubelet.KubeletServer` wired as the producer wires it in Kubernetes mode (x509 and
token webhook authentication, webhook authorization), serving one pod record with a secret in its
env (no agent runs: a request that passes the gate ends at "waiting to start" or at the ``/pods``
list). :class:`SecuredKubelet` makes clients: with the CA's certificate, a foreign CA's, a token,
or nothing.
"""

from __future__ import annotations

import socket
import ssl
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from producer.kubelet import KubeletServer, serving_context
from producer.kubelet.auth import Authenticator, Gate, StreamLimits, WebhookAuthorizer
from producer.kubelet.reviews import KubeReviewer
from tests.k8s.apiserver import FakeKubeApiServer
from tests.support.kubelet import Api
from vkec2.ca import FleetCA
from vkec2.config import AgentConnection
from vkec2.store.redis_store import Store

NODE = "vk-secure-0"
SECRET = "s3cr3t-db-password-7f1c"
APISERVER_USER = "kube-apiserver-kubelet-client"


def pod(name: str = "web") -> dict[str, Any]:
    """A pod bound to :data:`NODE` with :data:`SECRET` inline in an env value."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())},
        "spec": {
            "nodeName": NODE,
            "containers": [
                {
                    "name": "main",
                    "image": "x",
                    "command": ["true"],
                    "env": [{"name": "DB_PASSWORD", "value": SECRET}],
                }
            ],
        },
    }


@dataclass
class SecuredKubelet:
    server: KubeletServer
    apiserver: FakeKubeApiServer
    ca: FleetCA
    dir: Path
    _plain: ssl.SSLContext | None = None

    @property
    def port(self) -> int:
        return self.server.port

    def context(self, cert_of: FleetCA | None = None, cn: str = APISERVER_USER) -> ssl.SSLContext:
        """A client context (server not verified); with a client certificate of ``cert_of`` if given."""
        ctx = ssl.SSLContext(
            ssl.PROTOCOL_TLS_CLIENT
        )  # no system CA store to load: the server is not verified
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if cert_of is not None:
            issued = cert_of.issue_worker_client_cert(cn)
            crt, key = self.dir / f"{uuid.uuid4().hex}.crt", self.dir / f"{uuid.uuid4().hex}.key"
            crt.write_bytes(issued.cert_pem)
            key.write_bytes(issued.key_pem)
            ctx.load_cert_chain(str(crt), str(key))
        return ctx

    def api(self, cert_of: FleetCA | None = None, cn: str = APISERVER_USER) -> Api:
        return Api(self.port, self.context(cert_of, cn))

    def raw(self, request: bytes, ctx: ssl.SSLContext | None = None) -> bytes:
        """Send raw request bytes over TLS and read the whole answer (the server closes after it)."""
        if ctx is None:
            if self._plain is None:
                self._plain = self.context()
            ctx = self._plain
        chunks = []
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=15) as sock,
            ctx.wrap_socket(sock) as tls,
        ):
            tls.sendall(request)
            while data := tls.recv(65536):
                chunks.append(data)
        return b"".join(chunks)


@contextmanager
def secured_kubelet(
    redis_url: str,
    tmp: Path,
    *,
    authz_ttls: tuple[float, float] = (300.0, 30.0),
    limits: StreamLimits | None = None,
) -> Iterator[SecuredKubelet]:
    apiserver = FakeKubeApiServer().start()
    ca = FleetCA.create("test cluster CA")
    ca_file = tmp / "cluster-ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    cfg = k8s.Configuration()
    cfg.host = apiserver.url
    api_client = k8s.ApiClient(cfg)
    reviewer = KubeReviewer(api_client)
    gate = Gate(
        Authenticator(x509=True, reviewer=reviewer),
        WebhookAuthorizer(reviewer, *authz_ttls),
        limits or StreamLimits(),
    )
    store = Store.from_url(redis_url, f"t-{uuid.uuid4().hex[:8]}")
    store.put_desired(pod(), NODE)
    server = KubeletServer(
        store,
        NODE,
        AgentConnection(call_timeout_seconds=5),
        serving_context(NODE, client_ca_file=str(ca_file)),
        address="127.0.0.1",
        port=0,
        gate=gate,
    )
    server.start()
    try:
        yield SecuredKubelet(server, apiserver, ca, tmp)
    finally:
        server.stop()
        store.close()
        api_client.close()
        apiserver.stop()
