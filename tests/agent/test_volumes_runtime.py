"""The process runtime's volumes: resolved files and emptyDir written, mounts as links under the pod's
mount root (subPath included), UpdateVolumes swapping content, refusals, and clean-up."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from agent.model import FailedPrecondition, InvalidArgument
from agent.podspec import merge_resolved
from agent.runtime_process import ProcessRuntime


def _pod(mounts: list[dict[str, Any]], second: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    containers = [{"name": "a", "command": ["sleep", "30"], "volumeMounts": mounts}]
    if second is not None:
        containers.append({"name": "b", "command": ["sleep", "30"], "volumeMounts": second})
    return {
        "metadata": {"name": "p", "namespace": "default", "uid": "uid-v"},
        "spec": {
            "restartPolicy": "Never",
            "containers": containers,
            "volumes": [
                {"name": "creds", "secret": {"secretName": "db"}},
                {"name": "scratch", "emptyDir": {}},
            ],
        },
    }


def _resolved(value: str) -> str:
    data = base64.b64encode(value.encode()).decode()
    return json.dumps({"volumes": {"creds": [{"path": "conf/pw", "data": data, "mode": 0o400}]}})


def test_volumes_are_linked_at_their_mount_paths_and_updated_in_place(tmp_path: Path) -> None:
    rt = ProcessRuntime(tmp_path / "logs", mount_root=tmp_path / "mnt")
    mounts: list[dict[str, Any]] = [
        {"name": "creds", "mountPath": "/etc/creds", "readOnly": True},
        {"name": "creds", "mountPath": "/etc/pw-only", "subPath": "conf"},
        {"name": "scratch", "mountPath": "/work"},
    ]
    try:
        rt.launch(merge_resolved(json.dumps(_pod(mounts)), _resolved("one")))
        root = tmp_path / "mnt" / "uid-v"
        assert (root / "etc/creds/conf/pw").read_text() == "one"
        assert (root / "etc/pw-only/pw").read_text() == "one"
        assert os.stat(root / "etc/creds/conf/pw").st_mode & 0o777 == 0o400
        assert (root / "work").is_dir() and os.readlink(root / "etc/creds/..data").startswith("..")
        assert rt.update_volumes("uid-v", _resolved("two")) == ["creds"]
        assert (root / "etc/creds/conf/pw").read_text() == "two"
        assert rt.update_volumes("uid-v", _resolved("two")) == []  # nothing changed, nothing swapped
        with pytest.raises(FailedPrecondition):
            rt.update_volumes("another-uid", _resolved("x"))
    finally:
        rt.close()
    assert not (tmp_path / "mnt" / "uid-v" / "etc" / "creds").exists()
    assert not any((tmp_path / "logs-volumes").iterdir())


def test_one_path_for_two_volumes_or_an_existing_path_is_refused(tmp_path: Path) -> None:
    rt = ProcessRuntime(tmp_path / "logs", mount_root=tmp_path / "mnt")
    clash = _pod([{"name": "creds", "mountPath": "/data"}], [{"name": "scratch", "mountPath": "/data"}])
    with pytest.raises(InvalidArgument, match="used for two different volumes"):
        rt.launch(json.dumps(clash))
    (tmp_path / "mnt" / "uid-v" / "data").mkdir(parents=True)
    with pytest.raises(FailedPrecondition, match="exists on the instance"):
        rt.launch(json.dumps(_pod([{"name": "scratch", "mountPath": "/data"}])))
    assert rt.pod is None
