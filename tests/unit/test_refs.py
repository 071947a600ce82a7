"""Resolution rules of producer/refs.py (env, envFrom, volumes), the sealing of their result, and the
agent's side: environments from resolved values, the atomic-writer layout, unsupported volumes."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from agent.model import InvalidArgument
from agent.podspec import container_environment, merge_resolved, parse_pod
from agent.volumes import VolumeFile, write_atomic
from producer.refs import RefError, needs_resolving, resolve
from vkec2.domain.podspec import refuse_unsupported_volumes
from vkec2.domain.sealed import Sealer, SealingError, split_resolved
from vkec2.errors import InvalidPodSpec


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Objects:
    def __init__(self) -> None:
        self.cms: dict[str, dict[str, Any]] = {
            "app": {
                "data": {"GREETING": "hi", "LEVEL": "debug", "a=b": "x"},
                "binaryData": {"bin": b64("01")},
            },
        }
        self.secrets: dict[str, dict[str, Any]] = {"db": {"data": {"password": b64("pw"), "user": b64("u")}}}
        self.gets: list[str] = []
        self.tokens: list[tuple[str, int]] = []

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets.append(f"cm/{namespace}/{name}")
        return self.cms.get(name)

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets.append(f"secret/{namespace}/{name}")
        return self.secrets.get(name)

    def token(self, pod: Mapping[str, Any], audience: str, seconds: int) -> str:
        self.tokens.append((audience, seconds))
        return f"token-for-{pod['metadata']['name']}"


def pod(containers: list[dict[str, Any]], volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "team", "uid": "u1", "labels": {"b": "2", "a": "1"}},
        "spec": {"containers": containers, "volumes": volumes or []},
    }


def env_ref(name: str, kind: str, ref: str, key: str, optional: bool = False) -> dict[str, Any]:
    return {"name": name, "valueFrom": {kind: {"name": ref, "key": key, "optional": optional}}}


def files(result: dict[str, Any], vol: str) -> dict[str, tuple[str, int]]:
    return {f["path"]: (base64.b64decode(f["data"]).decode(), f["mode"]) for f in result["volumes"][vol]}


def test_env_refs_resolve_and_optional_missing_ones_are_left_out() -> None:
    p = pod(
        [
            {
                "name": "c",
                "env": [
                    env_ref("PW", "secretKeyRef", "db", "password"),
                    env_ref("LVL", "configMapKeyRef", "app", "LEVEL"),
                    env_ref("GONE", "secretKeyRef", "nope", "k", optional=True),
                    env_ref("NOKEY", "configMapKeyRef", "app", "missing", optional=True),
                ],
            }
        ]
    )
    objs = Objects()
    assert needs_resolving(p)
    assert resolve(p, objs)["containers"] == {"c": {"envFrom": [], "env": {"PW": "pw", "LVL": "debug"}}}
    assert objs.gets.count("secret/team/db") == 1  # one GET per object and resolve


@pytest.mark.parametrize(
    ("var", "message"),
    [
        (env_ref("X", "secretKeyRef", "nope", "k"), 'secret "nope" not found'),
        (env_ref("X", "configMapKeyRef", "nope", "k"), 'configmap "nope" not found'),
        (env_ref("X", "secretKeyRef", "db", "k"), "couldn't find key k in Secret team/db"),
        (env_ref("X", "configMapKeyRef", "app", "k"), "couldn't find key k in ConfigMap team/app"),
    ],
)
def test_missing_required_refs_name_what_is_missing(var: dict[str, Any], message: str) -> None:
    with pytest.raises(RefError) as err:
        resolve(pod([{"name": "c", "env": [var]}]), Objects())
    assert err.value.message == message and err.value.reason == "CreateContainerConfigError"


def test_env_from_prefixes_keys_skips_invalid_names_and_honours_optional() -> None:
    c = {
        "name": "c",
        "envFrom": [
            {"configMapRef": {"name": "app"}, "prefix": "CFG_"},
            {"secretRef": {"name": "db"}},
            {"secretRef": {"name": "absent", "optional": True}},
        ],
    }
    got = resolve(pod([c]), Objects())["containers"]["c"]["envFrom"]
    assert got == [["CFG_GREETING", "hi"], ["CFG_LEVEL", "debug"], ["password", "pw"], ["user", "u"]]
    with pytest.raises(RefError, match='secret "absent" not found'):
        resolve(pod([{"name": "c", "envFrom": [{"secretRef": {"name": "absent"}}]}]), Objects())


def test_volumes_items_modes_and_optional() -> None:
    vols = [
        {"name": "all", "configMap": {"name": "app", "defaultMode": 0o600}},
        {
            "name": "some",
            "secret": {"secretName": "db", "items": [{"key": "password", "path": "d/pw", "mode": 0o400}]},
        },
        {"name": "opt", "secret": {"secretName": "absent", "optional": True}},
        {
            "name": "down",
            "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]},
        },
        {
            "name": "proj",
            "projected": {
                "defaultMode": 0o440,
                "sources": [
                    {"configMap": {"name": "app", "items": [{"key": "GREETING", "path": "g"}]}},
                    {
                        "serviceAccountToken": {
                            "audience": "vault",
                            "expirationSeconds": 7200,
                            "path": "token",
                        }
                    },
                ],
            },
        },
        {"name": "scratch", "emptyDir": {}},
    ]
    objs = Objects()
    result = resolve(pod([{"name": "c"}], vols), objs)
    assert files(result, "all") == {
        "GREETING": ("hi", 0o600),
        "LEVEL": ("debug", 0o600),
        "a=b": ("x", 0o600),
        "bin": ("01", 0o600),
    }
    assert files(result, "some") == {"d/pw": ("pw", 0o400)}
    assert result["volumes"]["opt"] == [] and "scratch" not in result["volumes"]
    assert files(result, "down") == {"labels": ('a="1"\nb="2"', 0o644)}
    assert files(result, "proj") == {"g": ("hi", 0o440), "token": ("token-for-p", 0o440)}
    assert objs.tokens == [("vault", 7200)]


@pytest.mark.parametrize(
    ("vol", "message"),
    [
        (
            {"secret": {"secretName": "db", "items": [{"key": "nokey", "path": "x"}]}},
            "non-existent key nokey",
        ),
        ({"configMap": {"name": "app", "items": [{"key": "LEVEL", "path": "../x"}]}}, "must be relative"),
        ({"configMap": {"name": "nope"}}, 'configmap "nope" not found'),
        (
            {"projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 60, "path": "t"}}]}},
            "at least 600",
        ),
    ],
)
def test_bad_volume_refs_are_refused(vol: dict[str, Any], message: str) -> None:
    with pytest.raises(RefError, match=message):
        resolve(pod([{"name": "c"}], [{"name": "v", **vol}]), Objects())


def test_sealed_content_opens_with_a_rotated_key_set_and_never_shows_plaintext() -> None:
    old, new = Sealer.generate_key(), Sealer.generate_key()
    content = {"containers": {"c": {"env": {"PW": "hunter2-secret"}}}, "volumes": {"v": []}}
    stored = Sealer([old]).seal(content)
    assert "hunter2" not in json.dumps(stored)
    rotated = Sealer([new, old])
    assert rotated.open(stored) == content
    assert rotated.digest(content) != Sealer([old]).digest(content)  # a keyed digest, not a plain hash
    with pytest.raises(SealingError):
        Sealer([new]).open(stored)
    with pytest.raises(SealingError, match="no key"):
        Sealer([])
    plain, sealed = split_resolved({"metadata": {}, "vkec2Resolved": stored})
    assert plain == {"metadata": {}} and sealed == stored


def test_agent_builds_env_from_resolved_values_in_kubelet_order() -> None:
    raw = pod(
        [
            {
                "name": "c",
                "command": ["true"],
                "envFrom": [{"configMapRef": {"name": "app"}}],
                "env": [
                    env_ref("PW", "secretKeyRef", "db", "password"),
                    {"name": "BOTH", "value": "$(GREETING)-$(PW)"},
                    env_ref("OPT", "secretKeyRef", "absent", "k", optional=True),
                ],
            }
        ]
    )
    resolved = {"containers": {"c": {"envFrom": [["GREETING", "hi"]], "env": {"PW": "$(GREETING)"}}}}
    spec = parse_pod(merge_resolved(json.dumps(raw), json.dumps(resolved)))
    env = container_environment(spec, spec.containers[0], pod_ip="", host_ip="", base={})
    # a secret's value is never $(VAR)-expanded, but later values may refer to it
    assert env == {"GREETING": "hi", "PW": "$(GREETING)", "BOTH": "hi-$(GREETING)"}


def test_agent_refuses_unsupported_volumes_and_bad_mounts() -> None:
    host = pod([{"name": "c", "command": ["true"]}], [{"name": "h", "hostPath": {"path": "/etc"}}])
    with pytest.raises(InvalidArgument, match="volume 'h' has type hostPath"):
        parse_pod(json.dumps(host))
    with pytest.raises(InvalidPodSpec, match="volume 'h' has type hostPath") as err:
        refuse_unsupported_volumes(host)
    assert err.value.reason == "UnsupportedVolume"
    for mount, message in (
        ({"name": "x", "mountPath": "/a"}, "names no volume"),
        ({"name": "e", "mountPath": "rel"}, "absolute"),
        ({"name": "e", "mountPath": "/a", "subPath": "../up"}, "subPath"),
        ({"name": "e", "mountPath": "/a", "subPathExpr": "$(X)"}, "subPathExpr"),
    ):
        bad = pod(
            [{"name": "c", "command": ["true"], "volumeMounts": [mount]}], [{"name": "e", "emptyDir": {}}]
        )
        with pytest.raises(InvalidArgument, match=message):
            parse_pod(json.dumps(bad))


def test_atomic_writer_layout_and_swap(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    assert write_atomic(target, [VolumeFile("a", b"1", 0o400), VolumeFile("d/b", b"2", 0o644)])
    first = os.readlink(target / "..data")
    assert first.startswith("..") and os.readlink(target / "a") == "..data/a"
    assert (target / "a").read_bytes() == b"1" and (target / "d" / "b").read_bytes() == b"2"
    assert (target / first / "a").stat().st_mode & 0o777 == 0o400
    assert not write_atomic(target, [VolumeFile("a", b"1", 0o400), VolumeFile("d/b", b"2", 0o644)])
    assert write_atomic(target, [VolumeFile("a", b"new", 0o400)])
    assert (target / "a").read_bytes() == b"new" and not (target / "d").exists()
    assert not (target / first).exists() and os.readlink(target / "..data") != first


def test_malformed_references_are_named_not_crashes() -> None:
    bad_mode = [{"name": "v", "configMap": {"name": "app", "defaultMode": "rw"}}]
    with pytest.raises(RefError, match="cannot be resolved"):
        resolve(pod([{"name": "c"}], bad_mode), Objects())
    objs = Objects()
    objs.secrets["db"] = {"data": {"password": "not base64!"}}
    with pytest.raises(RefError, match="cannot be resolved"):
        resolve(pod([{"name": "c", "env": [env_ref("P", "secretKeyRef", "db", "password")]}]), objs)


@pytest.mark.parametrize(
    "resolved",
    [{"containers": [1]}, {"volumes": [1]}, {"volumes": {"v": [{"path": "../x", "data": ""}]}}, [1]],
)
def test_agent_refuses_malformed_resolved_content(resolved: Any) -> None:
    raw = pod([{"name": "c", "command": ["true"]}], [{"name": "v", "secret": {"secretName": "s"}}])
    with pytest.raises(InvalidArgument):
        parse_pod(merge_resolved(json.dumps(raw), json.dumps(resolved)))
