"""``kubectl logs`` end to end through the API double, with the kubelet API's webhook authentication on.

The real ``vkec2 producer`` runs in Kubernetes mode against the double with ``--kubelet-client-ca``
and ``--kubelet-token-webhook``; the double proxies ``pods/log`` to the node's kubelet API with its
kubelet client certificate (from the same cluster CA, verifying the kubelet's serving certificate)
and answers the producer's SubjectAccessReviews from its rules. The pod really runs (an agent
simulator of this module with ``--runtime process``, a real Celery worker on moto's EC2), and the
real ``kubectl`` reads its log when the double allows ``nodes/proxy`` to the API server's
certificate, and gets the kubelet's Forbidden when it denies it. Bearer tokens sent straight to the
kubelet API are checked with the double's TokenReview and authorized by its SubjectAccessReview.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from tests.k8s.apiserver import FakeKubeApiServer
from tests.k8s.kubelet_double import AccessRule
from tests.producer.conftest import StartProducer, pod_manifest
from tests.support.fleet import FleetHarness
from tests.support.kubectl_double import APISERVER_USER, kubectl, kubelet_flags, kubelet_pki
from tests.support.kubelet import Api
from tests.support.services import free_port, port_open, wait_until
from vkec2.domain.models import Phase

NODE = "vk-kubectl-logs-0"


def test_kubectl_logs_through_the_api_double_is_authorized_by_subject_access_review(
    tmp_path: Path,
    redis_url: str,
    moto_url: str,
    process_sim: str,
    apiserver: FakeKubeApiServer,
    start_producer: StartProducer,
) -> None:
    port = free_port()
    pki = kubelet_pki(tmp_path, apiserver, NODE, port, allow=None)
    auth = apiserver.auth
    auth.rules.append(AccessRule(allow=False, user=APISERVER_USER, reason="the test denies it first"))

    fleet = FleetHarness(tmp_path, redis_url, moto_url, process_sim)
    try:
        fleet.start_worker(concurrency=2)
        producer = start_producer(
            fleet,
            NODE,
            *kubelet_flags(pki, port),
            "--kubelet-token-webhook",
            "--kubelet-authz-denied-ttl",
            "0",  # the test flips the rule from deny to allow at once
        )
        wait_until(lambda: port_open(port) or not producer.alive(), 30, "the kubelet API to listen")
        manifest = pod_manifest("talker", NODE, gates=False, grace=1)
        manifest["spec"]["containers"][0]["command"] = [
            "sh",
            "-c",
            "echo hello from vkec2; echo bye; sleep 300",
        ]
        uid = apiserver.create("pods", manifest)["metadata"]["uid"]
        fleet.wait_phase([uid], {Phase.RUNNING}, timeout=90)
        home = tmp_path / "kubectl"
        home.mkdir()

        denied = kubectl(apiserver, home, "logs", "talker", "-n", "default")
        assert denied.returncode != 0
        assert "Error from server (Forbidden): Forbidden (user=kube-apiserver-kubelet-client, verb=get, " in (
            denied.stderr
        )
        assert (
            "resource=nodes, subresource=proxy): the test denies it first ( pods/log talker)" in denied.stderr
        )
        review = auth.access_reviews[-1]["spec"]
        assert review["user"] == APISERVER_USER and review["resourceAttributes"]["name"] == NODE

        auth.rules[:] = [AccessRule(allow=True, user=APISERVER_USER, subresource="proxy")]

        def logged() -> bool:
            out = kubectl(apiserver, home, "logs", "talker", "-n", "default")
            return out.returncode == 0 and out.stdout.splitlines() == ["hello from vkec2", "bye"]

        wait_until(logged, 30, "kubectl logs to show the container's output", interval=0.5)
        tail = kubectl(apiserver, home, "logs", "talker", "-n", "default", "--tail=1")
        assert (tail.returncode, tail.stdout) == (0, "bye\n"), tail.stderr

        # Bearer tokens straight at the kubelet API: TokenReview and SubjectAccessReview by the double.
        auth.tokens["alice-token"] = {"username": "alice", "groups": ["devs"]}
        auth.tokens["mallory-token"] = {"username": "mallory"}
        auth.rules.append(AccessRule(allow=True, user="alice", subresource="proxy"))
        api = Api(port, ssl.create_default_context(cafile=str(pki / "ca.crt")))
        logs = "/containerLogs/default/talker/main"
        assert api.get(logs, {"Authorization": "Bearer alice-token"}) == (200, b"hello from vkec2\nbye\n")
        assert api.get(logs, {"Authorization": "Bearer mallory-token"})[0] == 403
        assert api.get(logs, {"Authorization": "Bearer nobody-token"}) == (401, b"Unauthorized\n")
        assert api.get(logs) == (401, b"Unauthorized\n")
        reviewed = [r["spec"]["token"] for r in auth.token_reviews]
        assert reviewed == ["alice-token", "mallory-token", "nobody-token"]
    finally:
        fleet.stop()
