"""The chart wires the kubelet API's authentication by default, and refuses to render it open by accident.

By default the producer authenticates the API server's kubelet client certificate against the
cluster CA (``kube-root-ca.crt``, mounted), bearer tokens by TokenReview, and its ClusterRole may
create the TokenReviews and SubjectAccessReviews that needs; the command line is one the producer
itself accepts in Kubernetes mode. Without any method the chart fails unless ``insecureNoAuth``.
"""

from __future__ import annotations

import pytest

from producer.options import parse_args
from tests.support.helm import PREFIX, Helm, Obj, Objects, container, pod_spec, role_rules


def _producer(objs: Objects) -> tuple[Obj, Obj]:
    sts = objs.get("StatefulSet", f"{PREFIX}-producer")
    return sts, container(sts, "producer")


def _review_rules(objs: Objects) -> set[tuple[str, str, str]]:
    rules = role_rules(objs.get("ClusterRole", f"{PREFIX}-producer"))
    return {rule for rule in rules if rule[1] in ("tokenreviews", "subjectaccessreviews")}


def test_default_chart_turns_kubelet_authentication_on(h: Helm) -> None:
    objs = h.template()
    sts, c = _producer(objs)
    assert "--kubelet-client-ca=/etc/vkec2/kubelet-client-ca/ca.crt" in c["args"]
    assert "--kubelet-token-webhook" in c["args"]
    assert "--kubelet-insecure-no-auth" not in c["args"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "kubelet-client-ca")
    assert mount == {
        "name": "kubelet-client-ca",
        "mountPath": "/etc/vkec2/kubelet-client-ca",
        "readOnly": True,
    }
    volume = next(v for v in pod_spec(sts)["volumes"] if v["name"] == "kubelet-client-ca")
    assert volume["configMap"] == {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert _review_rules(objs) == {
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
    }


def test_the_rendered_command_line_passes_the_producers_own_checks(h: Helm) -> None:
    _, c = _producer(h.template(None, "producer.kubeletAuth.clientCA.configMap="))
    opts = parse_args(c["args"])  # exits (status 2) if Kubernetes mode had no authentication method
    assert opts.kubelet_token_webhook and opts.kubelet_client_ca is None and not opts.kubelet_insecure_no_auth


def test_a_secret_ca_and_the_insecure_switch(h: Helm) -> None:
    sts, c = _producer(
        h.template(
            None,
            "producer.kubeletAuth.clientCA.configMap=",
            "producer.kubeletAuth.clientCA.secret=kubelet-ca",
        )
    )
    volume = next(v for v in pod_spec(sts)["volumes"] if v["name"] == "kubelet-client-ca")
    assert volume["secret"]["secretName"] == "kubelet-ca"
    open_objs = h.template(
        None,
        "producer.kubeletAuth.clientCA.configMap=",
        "producer.kubeletAuth.tokenWebhook=false",
        "producer.kubeletAuth.insecureNoAuth=true",
    )
    _, c = _producer(open_objs)
    assert "--kubelet-insecure-no-auth" in c["args"]
    assert not any(a.startswith("--kubelet-client-ca") for a in c["args"])
    assert _review_rules(open_objs) == set()  # nothing to review, nothing granted


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ("producer.kubeletAuth.clientCA.configMap=", "producer.kubeletAuth.tokenWebhook=false"),
            "the kubelet API needs clientCA",
        ),
        (("producer.kubeletAuth.insecureNoAuth=true",), "insecureNoAuth contradicts clientCA/tokenWebhook"),
        (("producer.kubeletAuth.clientCA.secret=x",), "set configMap or secret, not both"),
    ],
)
def test_a_kubelet_api_without_authentication_is_refused(
    h: Helm, sets: tuple[str, ...], message: str
) -> None:
    err = h.template_error(None, *sets)
    assert message in err
