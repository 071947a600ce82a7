"""The agent's gRPC server and command line (``python -m agent`` / ``vkec2 agent``).

It holds one runtime (one pod per instance) and serves it in one of three modes:

* ``insecure`` (``--insecure``): every service in plaintext, for local development only; a loud
  warning says so.
* ``bootstrap`` (the default at start): plaintext, but only AgentBootstrap and grpc.health. The
  fleet asks CreateCertificateRequest (a CSR for the agent's own key, proven with the launch's
  bootstrap secret), signs it and sends the certificate back (LaunchAuthenticatedEndpoint); the
  agent takes it only if it chains to the fleet CA pinned from its user data and names this
  instance (:mod:`agent.pki`). Without a pinned CA and secret the agent cannot be bootstrapped.
* ``authenticated``: the listener is restarted on the same address with TLS requiring client
  certificates signed by the pinned CA; plaintext is refused. With ``--state-dir`` the material
  survives a restart of the agent, and the one-time secret file is deleted.

Every lifecycle call must carry this instance's ID in the ``x-vkec2-instance-id`` metadata. The
command line that builds it is :mod:`agent.cli`; anything served beyond the agent's own services
(the simulation) comes in as an :class:`agent.service.Extension`.
"""

from __future__ import annotations

import logging
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc

import agent
from agent.bootstrap import CertificateRequest, Identity, TlsMaterial, Trust, bootstrap_proof
from agent.host import Instance, check_instance_id
from agent.pki import KeyAndCsr, PkiError, check_issued, new_key_and_csr
from agent.runtime import Runtime
from agent.service import Extension, make_server

log = logging.getLogger("vkec2.agent")

INSECURE_WARNING = """\
******************************************************************************
* vkec2 agent: --insecure. Every service, the workload API included, is served *
* in PLAINTEXT without authentication. Use this for local development only.   *
******************************************************************************"""


class AgentServer:
    """One agent: a runtime behind a gRPC server whose transport follows the bootstrap mode."""

    def __init__(
        self,
        listen: str,
        identity: Identity,
        runtime: Runtime,
        *,
        insecure: bool = False,
        extension: Extension | None = None,
        state_dir: Path | None = None,
        max_workers: int = 64,
        trust: Trust | None = None,
        secret_file: Path | None = None,
    ) -> None:
        self._host_part, _, port = listen.rpartition(":")
        if not self._host_part or not port.isdigit():
            raise ValueError(f"--listen must be HOST:PORT, got {listen!r}")
        self._port = int(port)
        self._identity = identity
        self._instance = Instance(identity.instance_id, runtime)
        self._extension = extension
        self._insecure = insecure
        self._state_dir = state_dir
        self._max_workers = max_workers
        self._trust = trust
        self._secret_file = secret_file
        self._pending: KeyAndCsr | None = None
        self._lock = threading.Lock()
        self._mode = "insecure" if insecure else "bootstrap"
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._stopped = threading.Event()
        self.switched = threading.Event()

    # -- Host ------------------------------------------------------------------------------
    def resolve(self, context: grpc.ServicerContext) -> Instance:
        check_instance_id(context, self._identity.instance_id)
        return self._instance

    def health_target(self, context: grpc.ServicerContext) -> Instance | None:
        return self._instance

    def identity(self, context: grpc.ServicerContext) -> Identity:
        return self._identity

    def mode(self, context: grpc.ServicerContext | None = None) -> str:
        return self._mode

    def _refuse_unless_bootstrapping(self, context: grpc.ServicerContext) -> Trust:
        if self._mode == "insecure":
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this agent runs with --insecure; there is no authenticated endpoint to launch",
            )
        if self._mode != "bootstrap":
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "already authenticated: LaunchAuthenticatedEndpoint is one-shot",
            )
        if self._trust is None:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this agent has no pinned fleet CA and bootstrap secret (--fleet-ca-file, "
                "--bootstrap-secret-file): it cannot be bootstrapped",
            )
        assert self._trust is not None
        return self._trust

    def certificate_request(self, nonce: bytes, context: grpc.ServicerContext) -> CertificateRequest:
        check_instance_id(context, self._identity.instance_id)
        with self._lock:
            trust = self._refuse_unless_bootstrapping(context)
            if self._pending is None:
                try:
                    self._pending = new_key_and_csr(self._identity.instance_id)
                except PkiError as exc:
                    context.abort(grpc.StatusCode.INTERNAL, str(exc))
            assert self._pending is not None
            csr = self._pending.csr_pem
        doc = self._identity.document
        return CertificateRequest(
            csr, doc, self._identity.signature, bootstrap_proof(trust.secret, nonce, csr, doc)
        )

    def install_certificate(self, cert_pem: bytes, chain_pem: bytes, context: grpc.ServicerContext) -> str:
        check_instance_id(context, self._identity.instance_id)
        with self._lock:
            trust = self._refuse_unless_bootstrapping(context)
            if self._pending is None:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "no certificate request is pending: call CreateCertificateRequest first",
                )
            assert self._pending is not None
            try:
                check_issued(
                    cert_pem, chain_pem, self._pending.key_pem, trust.ca_pem, self._identity.instance_id
                )
            except PkiError as exc:
                log.warning("refused a certificate: %s", exc)
                context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
            chain = cert_pem.rstrip(b"\n") + b"\n" + chain_pem
            material = TlsMaterial(chain, self._pending.key_pem, trust.ca_pem)
            self._mode = "switching"
        # Switch once this answer has left: the callback runs when the RPC is complete.
        context.add_callback(
            lambda: threading.Thread(
                target=self._switch, args=(material,), name="vkec2-tls", daemon=True
            ).start()
        )
        return "authenticated"

    # -- serving ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return f"{self._host_part}:{self._port}"

    def _build(self, mode: str, material: TlsMaterial | None) -> None:
        executor = futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="vkec2-rpc")
        server = make_server(executor, self, lifecycle=mode != "bootstrap", extension=self._extension)
        if material is not None:
            creds = grpc.ssl_server_credentials(
                [(material.key_pem, material.cert_pem)],
                root_certificates=material.ca_pem,
                require_client_auth=True,
            )
            port = server.add_secure_port(self.address, creds)
        else:
            port = server.add_insecure_port(self.address)
        if not port:
            executor.shutdown(wait=False)
            raise OSError(f"cannot listen on {self.address}")
        self._port = port
        server.start()
        self._server, self._executor, self._mode = server, executor, mode

    def start(self) -> None:
        material = TlsMaterial.load(self._state_dir) if self._state_dir and not self._insecure else None
        if self._insecure:
            print(INSECURE_WARNING, file=sys.stderr, flush=True)
            self._build("insecure", None)
        elif material is not None:
            log.info("found TLS material in %s: serving authenticated", self._state_dir)
            self._build("authenticated", material)
        else:
            self._build("bootstrap", None)
        log.info(
            "vkec2 agent %s for %s listening on %s (%s)",
            agent.__version__,
            self._identity.instance_id,
            self.address,
            self._mode,
        )

    def _stop_current(self, grace: float) -> None:
        server, executor = self._server, self._executor
        if server is not None:
            server.stop(grace).wait()
        if executor is not None:
            executor.shutdown(wait=False)
        self._server = self._executor = None

    def _switch(self, material: TlsMaterial) -> None:
        with self._lock:
            if self._stopped.is_set():
                return
            self._stop_current(1.0)
            try:
                self._build("authenticated", material)
            except Exception:
                log.exception("cannot serve TLS with the material received; back to bootstrap mode")
                self._build("bootstrap", None)
                return
            if self._state_dir is not None:
                material.save(self._state_dir)
                if self._secret_file is not None:  # one-time: the saved material replaces it
                    self._secret_file.unlink(missing_ok=True)
            log.info("authenticated: serving mTLS on %s", self.address)
        self.switched.set()

    def stop(self, grace: float = 2.0) -> None:
        with self._lock:
            self._stopped.set()
            self._stop_current(grace)
        self._instance.runtime.close()

    def wait(self) -> None:
        self._stopped.wait()
