"""The real ``kubectl`` against the API double, and the kubelet PKI the double dials nodes with.

Shared set-up of the end-to-end tests that run the real ``kubectl`` (``logs``, ``exec``, ``cp``,
``port-forward``, ``top``) through :class:`~tests.k8s.apiserver.FakeKubeApiServer` to the real
producer's kubelet API. :func:`kubectl` runs the binary with a kubeconfig naming the double (no
credentials: the double does not authenticate its own callers) in a private ``HOME``.
:func:`kubelet_pki` makes a cluster CA, the producer's serving certificate and the API server's
kubelet client certificate, and points the double's node proxy at the producer's kubelet port, as
an API server's ``--kubelet-client-certificate`` and a node's address do; :func:`kubelet_flags`
are the producer flags that serve with them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.k8s.apiserver import FakeKubeApiServer
from tests.k8s.kubelet_double import AccessRule
from tests.support.kubetools import kubectl_path
from vkec2.ca import FleetCA

#: The user of the API server's kubelet client certificate (its CN), as the kubelet API sees it.
APISERVER_USER = "kube-apiserver-kubelet-client"


def kubectl_argv(apiserver: FakeKubeApiServer, home: Path, *args: str) -> list[str]:
    """The command line of the real ``kubectl`` against ``apiserver`` (namespace ``default``)."""
    config = home / "kubeconfig"
    if not config.exists():
        home.mkdir(parents=True, exist_ok=True)
        context = {"cluster": "double", "user": "dev", "namespace": "default"}
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "double",
                    "clusters": [{"name": "double", "cluster": {"server": apiserver.url}}],
                    "users": [{"name": "dev", "user": {}}],
                    "contexts": [{"name": "double", "context": context}],
                }
            )
        )
    return [str(kubectl_path()), "--kubeconfig", str(config), "--cache-dir", str(home / "cache"), *args]


def kubectl_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment ``kubectl`` runs in: a private HOME, the system PATH, and ``extra``."""
    return {"HOME": str(home), "PATH": "/usr/bin:/bin", **extra}


def kubectl(apiserver: FakeKubeApiServer, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``kubectl args`` to the end (60 s at most) and return what it did."""
    return subprocess.run(
        kubectl_argv(apiserver, home, *args),
        capture_output=True,
        text=True,
        timeout=60,
        env=kubectl_env(home),
    )


def kubelet_pki(
    tmp_path: Path, apiserver: FakeKubeApiServer, node: str, port: int, *, allow: str | None = "proxy"
) -> Path:
    """The directory of the cluster CA and both certificates; the double dials ``node`` at
    127.0.0.1:``port`` with its kubelet client certificate, and (unless ``allow`` is None) its
    SubjectAccessReviews allow that user the ``nodes/<allow>`` subresource."""
    ca = FleetCA.create("test cluster CA")
    pki = tmp_path / "pki"
    pki.mkdir()
    (pki / "ca.crt").write_bytes(ca.cert_pem)
    serving = ca.issue_agent_server_cert("kubelet", ips=["127.0.0.1"])
    (pki / "kubelet.crt").write_bytes(serving.cert_pem)
    (pki / "kubelet.key").write_bytes(serving.key_pem)
    client = ca.issue_worker_client_cert(APISERVER_USER)
    (pki / "apiserver-kubelet-client.crt").write_bytes(client.cert_pem)
    (pki / "apiserver-kubelet-client.key").write_bytes(client.key_pem)
    auth = apiserver.auth
    auth.kubelet_client_cert = (
        str(pki / "apiserver-kubelet-client.crt"),
        str(pki / "apiserver-kubelet-client.key"),
    )
    auth.kubelet_ca = str(pki / "ca.crt")
    auth.kubelet_dial[node] = ("127.0.0.1", port)  # the node advertises a made-up InternalIP
    if allow is not None:
        auth.rules.append(AccessRule(allow=True, user=APISERVER_USER, subresource=allow))
    return pki


def kubelet_flags(pki: Path, port: int) -> list[str]:
    """The producer's flags serving the kubelet API on ``port`` with ``pki``, client certificates required."""
    return [
        "--kubelet-port",
        str(port),
        "--kubelet-cert",
        str(pki / "kubelet.crt"),
        "--kubelet-key",
        str(pki / "kubelet.key"),
        "--kubelet-client-ca",
        str(pki / "ca.crt"),
    ]
