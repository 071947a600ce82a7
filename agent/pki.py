"""The agent's own key, its certificate request, and the check of what the fleet signs back.

The private key is made here, on the instance, and never leaves it: the agent sends the fleet a
certificate signing request (CSR) and gets back only a certificate. The agent on an instance needs
nothing but grpcio and protobuf (a house rule, so the installer stays three wheels), and the Python
standard library can neither make a key nor sign a CSR, so this module drives the ``openssl``
command line, present on every Linux AMI and on macOS (LibreSSL), with the invocations both accept.
The returned certificate is checked by the standard library's TLS stack itself: an in-memory TLS
handshake between a server holding the certificate, its chain and the agent's key, and a client
that trusts only the CA pinned from the user data and expects the agent's own name. The handshake
succeeds only when the certificate chains to that CA, is valid now, is for a TLS server, names this
instance and matches this agent's key, which is exactly the rule, checked by OpenSSL rather than by
hand-written certificate parsing.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.bootstrap import agent_server_name

OPENSSL_TIMEOUT_SECONDS = 30.0
#: The least OpenSSL configuration ``openssl req`` needs when the subject comes from ``-subj``.
_REQ_CONFIG = "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n"


class PkiError(Exception):
    """A key or CSR could not be made, or the fleet's certificate is not acceptable."""


@dataclass(frozen=True)
class KeyAndCsr:
    key_pem: bytes
    csr_pem: bytes


def _openssl(args: list[str], stdin: bytes, workdir: Path) -> bytes:
    exe = shutil.which("openssl")
    if exe is None:
        raise PkiError("the openssl command is required to make this agent's key and CSR")
    try:
        done = subprocess.run(
            [exe, *args],
            input=stdin,
            capture_output=True,
            timeout=OPENSSL_TIMEOUT_SECONDS,
            cwd=workdir,
            env={**os.environ, "OPENSSL_CONF": str(workdir / "req.cnf")},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PkiError(f"openssl {args[0]} failed: {exc}") from None
    if done.returncode != 0:
        raise PkiError(f"openssl {args[0]} failed: {done.stderr.decode(errors='replace').strip()[-300:]}")
    return done.stdout


def new_key_and_csr(instance_id: str) -> KeyAndCsr:
    """A fresh ECDSA P-256 key and a CSR for it (subject CN = the instance ID), made by ``openssl``."""
    with tempfile.TemporaryDirectory(prefix="vkec2-pki-") as tmp:
        work = Path(tmp)
        (work / "req.cnf").write_text(_REQ_CONFIG)
        key = _openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout"], b"", work)
        csr = _openssl(
            ["req", "-new", "-key", "/dev/stdin", "-subj", f"/CN={instance_id}", "-config", "req.cnf"],
            key,
            work,
        )
    if b"PRIVATE KEY-----" not in key or b"CERTIFICATE REQUEST-----" not in csr:
        raise PkiError("openssl made no PEM key or CSR")
    return KeyAndCsr(key, csr)


def _pump(client: ssl.SSLObject, server: ssl.SSLObject, bios: list[ssl.MemoryBIO]) -> None:
    c_in, c_out, s_in, s_out = bios
    done = {"client": False, "server": False}
    for _ in range(16):
        for name, side, out, peer in (("client", client, c_out, s_in), ("server", server, s_out, c_in)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            data = out.read()
            if data:
                peer.write(data)
        if all(done.values()):
            return
    raise PkiError("the TLS self-check did not complete")


def check_issued(cert_pem: bytes, chain_pem: bytes, key_pem: bytes, ca_pem: bytes, instance_id: str) -> None:
    """Accept the fleet's certificate only if it chains to ``ca_pem``, names ``instance_id`` and fits our key.

    Raises :class:`PkiError` naming what is wrong.
    """
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
        raise PkiError("server_cert_pem is not a PEM certificate")
    with tempfile.TemporaryDirectory(prefix="vkec2-pki-") as tmp:
        chain_file, key_file = Path(tmp) / "chain.pem", Path(tmp) / "key.pem"
        chain_file.write_bytes(cert_pem.rstrip(b"\n") + b"\n" + chain_pem)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            server_ctx.load_cert_chain(chain_file, key_file)
        except ssl.SSLError as exc:
            raise PkiError(f"the certificate does not match this agent's key: {exc.reason or exc}") from None
    try:
        client_ctx = ssl.create_default_context(cadata=ca_pem.decode("ascii", errors="replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise PkiError(f"the pinned fleet CA is not a usable certificate: {exc}") from None
    bios = [ssl.MemoryBIO() for _ in range(4)]
    client = client_ctx.wrap_bio(bios[0], bios[1], server_hostname=agent_server_name(instance_id))
    server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    try:
        _pump(client, server, bios)
    except ssl.SSLCertVerificationError as exc:
        raise PkiError(
            f"the certificate is not acceptable for {instance_id} under the pinned fleet CA: "
            f"{exc.verify_message or exc}"
        ) from None
    except ssl.SSLError as exc:
        raise PkiError(f"the certificate failed the TLS self-check: {exc.reason or exc}") from None
