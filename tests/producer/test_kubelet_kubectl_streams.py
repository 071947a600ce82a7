"""``kubectl exec``, ``cp`` and ``port-forward`` end to end over SPDY/3.1, through the API double.

One fleet, producer and pod serve the whole module (one test, to keep CI short): the real ``vkec2
producer`` runs in Kubernetes mode with webhook authorization against the double, whose
``pods/exec`` and ``pods/portforward`` proxy the upgrade to the producer's kubelet API with the API
server's client certificate (:mod:`tests.k8s.streaming`); the pod really runs (an agent simulator
with ``--runtime process``). The real ``kubectl`` is told to speak SPDY (as every kubectl before
1.30 does, and as 1.30+ API servers speak to kubelets): ``exec -i`` feeds stdin and propagates the
exit code, ``attach`` follows the main process's output (and refuses ``-i`` clearly), ``cp`` copies
a file into and out of the pod, and ``port-forward`` reaches a server the test runs on the
"instance" (loopback) through the agent's PortForward stream.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import threading
from pathlib import Path

from tests.k8s.apiserver import FakeKubeApiServer
from tests.producer.conftest import StartProducer, pod_manifest
from tests.support.awslike import E2E_DEFAULT
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import fleet_behind
from tests.support.kubectl_double import kubectl_argv, kubectl_env, kubelet_flags, kubelet_pki
from tests.support.services import free_port, port_open, wait_until
from vkec2.domain.models import Phase

NODE = "vk-kubectl-streams-0"
SPDY_ONLY = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false", "KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}


def _serve(listener: socket.socket) -> None:
    """The "instance's" service: greets each connection, then echoes one line upper-cased.

    (Waiting for kubectl's local port to open connects too, so more than one connection comes.)
    """
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            try:
                conn.sendall(b"hello from the instance\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(1024)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(data.upper())
            except OSError:
                continue


def test_kubectl_exec_cp_and_port_forward_over_spdy(
    tmp_path: Path,
    redis_url: str,
    ec2_proxy: Ec2Proxy,
    process_sim: str,
    apiserver: FakeKubeApiServer,
    start_producer: StartProducer,
) -> None:
    port = free_port()
    pki = kubelet_pki(tmp_path, apiserver, NODE, port)
    auth = apiserver.auth

    # The worker reaches EC2 through the AWS-like endpoint (lag, throttling, slow transitions).
    fleet = fleet_behind(ec2_proxy, tmp_path, redis_url, process_sim, {}, aws_like=E2E_DEFAULT)
    try:
        fleet.start_worker(concurrency=2)
        producer = start_producer(
            fleet,
            NODE,
            *kubelet_flags(pki, port),
            "--kubelet-token-webhook",
        )
        wait_until(lambda: port_open(port) or not producer.alive(), 30, "the kubelet API to listen")
        manifest = pod_manifest("shell", NODE, gates=False, grace=1)
        manifest["spec"]["containers"][0]["command"] = [
            "sh",
            "-c",
            "while true; do echo tick; sleep 0.2; done",
        ]
        uid = apiserver.create("pods", manifest)["metadata"]["uid"]
        fleet.wait_phase([uid], {Phase.RUNNING}, timeout=90)
        wait_until(
            lambda: (
                (apiserver.get("pods", "shell", "default") or {}).get("status", {}).get("phase") == "Running"
            ),
            30,
            "the pod's status to say Running",
        )
        home = tmp_path / "kubectl"
        home.mkdir()

        def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                kubectl_argv(apiserver, home, *args),
                input=stdin,
                capture_output=True,
                text=True,
                timeout=60,
                env=kubectl_env(home, **SPDY_ONLY),
            )

        # exec -i: interactive stdin in, stdout out, the exit code back.
        out = kubectl(
            "exec",
            "-i",
            "shell",
            "--",
            "sh",
            "-c",
            "read x; echo got $x; echo oops >&2; exit 3",
            stdin="spdy\n",
        )
        assert (out.returncode, out.stdout) == (3, "got spdy\n"), out.stderr
        assert "oops" in out.stderr
        ok = kubectl("exec", "shell", "--", "echo", "fine")
        assert (ok.returncode, ok.stdout) == (0, "fine\n"), ok.stderr
        # Default kubectl speaks WebSocket (v5) to the API server, whose translator speaks SPDY on.
        default = subprocess.run(
            kubectl_argv(apiserver, home, "exec", "-i", "shell", "--", "sh", "-c", "cat; exit 4"),
            input="over websocket\n",
            capture_output=True,
            text=True,
            timeout=60,
            env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        )
        assert (default.returncode, default.stdout) == (4, "over websocket\n"), default.stderr
        assert auth.streams[-1] == ("exec", "websocket")  # translated, not a fallback to SPDY
        # attach -i to a main process started without stdin: a clear error, not a hang.
        attach = kubectl("attach", "-i", "shell")
        assert attach.returncode != 0 and "started with stdin closed" in attach.stderr, attach.stderr
        # attach without -i follows the main process's output.
        follow = subprocess.Popen(
            kubectl_argv(apiserver, home, "attach", "shell"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=kubectl_env(home, **SPDY_ONLY),
        )
        try:
            assert follow.stdout is not None
            assert select.select([follow.stdout], [], [], 20)[0], "attach printed nothing"
            assert follow.stdout.readline() == b"tick\n"
        finally:
            follow.terminate()
            follow.wait(10)

        # cp into and out of the pod (tar over exec stdin/stdout).
        pod_dir = tmp_path / "pod-fs"
        pod_dir.mkdir()
        payload = os.urandom(200_000)
        (tmp_path / "up.bin").write_bytes(payload)
        up = kubectl("cp", str(tmp_path / "up.bin"), f"default/shell:{pod_dir}/in.bin")
        assert up.returncode == 0, up.stderr
        assert (pod_dir / "in.bin").read_bytes() == payload
        (pod_dir / "out.txt").write_text("made in the pod\n")
        down = kubectl("cp", f"default/shell:{pod_dir}/out.txt", str(tmp_path / "down.txt"))
        assert down.returncode == 0, down.stderr
        assert (tmp_path / "down.txt").read_text() == "made in the pod\n"

        # port-forward to a port served on the instance, through the agent: over SPDY, then as
        # default kubectl does it (SPDY tunnelled in WebSocket, continued as SPDY by the API server).
        listener = socket.create_server(("127.0.0.1", 0))
        remote = listener.getsockname()[1]
        threading.Thread(target=_serve, args=(listener,), daemon=True).start()
        try:
            for env in (kubectl_env(home, **SPDY_ONLY), kubectl_env(home)):
                local = free_port()
                forward = subprocess.Popen(
                    kubectl_argv(apiserver, home, "port-forward", "pod/shell", f"{local}:{remote}"),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                )
                try:
                    wait_until(
                        lambda: port_open(local) or forward.poll() is not None,  # noqa: B023
                        30,
                        "kubectl port-forward to listen",
                    )
                    with socket.create_connection(("127.0.0.1", local), timeout=20) as conn:
                        reader = conn.makefile("rb")
                        assert reader.readline() == b"hello from the instance\n"
                        conn.sendall(b"through spdy\n")
                        assert reader.readline() == b"THROUGH SPDY\n"
                finally:
                    forward.terminate()
                    forward.wait(10)
        finally:
            listener.close()
        assert ("exec", "spdy") in auth.streams and ("portforward", "spdy") in auth.streams
        assert auth.streams[-1] == ("portforward", "websocket")
    finally:
        fleet.stop()
