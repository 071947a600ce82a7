"""The chart's sealing key for pods' ConfigMap/Secret content: generated once as a JSON list of Fernet
keys, read by the producer and the workers only, or taken from an existing Secret."""

from __future__ import annotations

import base64
import json

from cryptography.fernet import Fernet

from tests.support.helm import PREFIX, Helm, Objects, container, env_of


def _keys_ref(objs: Objects, kind: str, name: str) -> dict[str, str] | None:
    entry = env_of(container(objs.get(kind, name))).get("VKEC2_SECRETS__KEYS")
    return None if entry is None else dict(entry["valueFrom"]["secretKeyRef"])


def test_producer_and_workers_share_a_generated_fernet_key_beat_and_flower_do_not(h: Helm) -> None:
    objs = h.template(None, "flower.enabled=true")
    secret = objs.get("Secret", f"{PREFIX}-sealing")
    keys = json.loads(base64.b64decode(secret["data"]["keys"]))
    assert len(keys) == 1
    Fernet(keys[0])  # a valid key (urlsafe base64 of 32 bytes)
    expected = {"name": f"{PREFIX}-sealing", "key": "keys"}
    assert _keys_ref(objs, "StatefulSet", f"{PREFIX}-producer") == expected
    assert _keys_ref(objs, "Deployment", f"{PREFIX}-worker") == expected
    assert _keys_ref(objs, "Deployment", f"{PREFIX}-beat") is None
    assert _keys_ref(objs, "Deployment", f"{PREFIX}-flower") is None


def test_an_existing_secret_replaces_the_generated_key(h: Helm) -> None:
    objs = h.template(None, "sealing.existingSecret=my-keys", "sealing.key=fernet")
    assert objs.maybe("Secret", f"{PREFIX}-sealing") is None
    assert _keys_ref(objs, "Deployment", f"{PREFIX}-worker") == {"name": "my-keys", "key": "fernet"}
