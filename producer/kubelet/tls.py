"""TLS of the kubelet API: the server's ``ssl`` context, from given files or a certificate made at start.

The API server dials the kubelet port over HTTPS. With ``--kubelet-cert/--kubelet-key`` the producer
serves that pair; otherwise it issues itself a serving certificate (node name, ``localhost``,
127.0.0.1 and the given addresses as SANs) from a throw-away CA made with :mod:`vkec2.ca`. With
``--kubelet-client-ca`` a client certificate, when one is presented, must chain to that CA (the
handshake fails otherwise); whether a request without one is served is up to
:mod:`producer.kubelet.auth` (a bearer token, or ``/healthz``), as the kubelet does.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from vkec2.ca import FleetCA


def serving_context(
    node: str,
    *,
    cert_file: str | None = None,
    key_file: str | None = None,
    client_ca_file: str | None = None,
    addresses: tuple[str, ...] = (),
) -> ssl.SSLContext:
    """The server's TLS context: the given certificate, or one issued now from a throw-away CA.

    With ``client_ca_file`` a client certificate is asked for and, when given, must chain to that CA
    (the API server's kubelet client certificate); without it no client certificate is asked for.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    if cert_file and key_file:
        ctx.load_cert_chain(cert_file, key_file)
    else:
        ca = FleetCA.create(f"vkec2 kubelet CA of {node}")
        sans: list[x509.GeneralName] = [x509.DNSName(node), x509.DNSName("localhost")]
        for addr in {"127.0.0.1", *addresses}:
            with contextlib.suppress(ValueError):
                sans.append(x509.IPAddress(ipaddress.ip_address(addr)))
        issued = ca._issue(node, sans, ExtendedKeyUsageOID.SERVER_AUTH, 397)
        with tempfile.TemporaryDirectory(prefix="vkec2-kubelet-") as tmp:
            chain, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
            chain.write_bytes(issued.cert_pem + ca.cert_pem)
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(issued.key_pem)
            ctx.load_cert_chain(str(chain), str(key))
    if client_ca_file:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cafile=client_ca_file)
    return ctx
