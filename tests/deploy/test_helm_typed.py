"""Rendered workloads through the real ``kubectl``: ``kubectl set env --local`` decodes them into typed
Kubernetes objects offline, so a wrong type fails and a misspelt field is dropped and then missed by the
round-trip comparison (``kubectl create/apply --dry-run=client`` need an API server for discovery).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.helm import PREFIX, PROD_VALUES, Helm, Obj, pod_spec
from tests.support.kubetools import kubectl_path


def _missing(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Paths of ``expected`` that ``actual`` lacks or holds with another value."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [path or "/"]
        return [m for k, v in expected.items() for m in _missing(v, actual.get(k, _ABSENT), f"{path}/{k}")]
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) < len(expected):
            return [path]
        return [m for i, v in enumerate(expected) for m in _missing(v, actual[i], f"{path}/{i}")]
    return [] if expected == actual else [path]


_ABSENT = object()


def _kubectl_typed(source: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    """``kubectl set env --local``: decodes each workload into its typed object and prints it back."""
    return subprocess.run(
        [
            str(kubectl_path()),
            "set",
            "env",
            "--local",
            "-f",
            str(source),
            "VKEC2_KUBECTL_CHECK=1",
            "-o",
            "yaml",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp), "KUBECONFIG": str(tmp / "none")},
    )


@pytest.mark.parametrize("values", [None, PROD_VALUES], ids=["defaults", "production"])
def test_workloads_decode_as_typed_kubernetes_objects(h: Helm, tmp_path: Path, values: Obj | None) -> None:
    workloads = h.template(values).workloads()
    source = tmp_path / "workloads.yaml"
    source.write_text(yaml.safe_dump_all(workloads))
    proc = _kubectl_typed(source, tmp_path)
    assert proc.returncode == 0, proc.stderr
    decoded = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    assert [(d["kind"], d["metadata"]["name"]) for d in decoded] == [
        (w["kind"], w["metadata"]["name"]) for w in workloads
    ]
    for original, typed in zip(workloads, decoded, strict=True):
        assert _missing(original, typed) == [], original["metadata"]["name"]


def test_the_typed_round_trip_catches_a_misspelt_field(h: Helm, tmp_path: Path) -> None:
    worker = h.template().get("Deployment", f"{PREFIX}-worker")
    pod_spec(worker)["serviceAcountName"] = "typo"
    source = tmp_path / "typo.yaml"
    source.write_text(yaml.safe_dump(worker))
    proc = _kubectl_typed(source, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _missing(worker, yaml.safe_load(proc.stdout)) == ["/spec/template/spec/serviceAcountName"]


# --- docs/deployment.md ---------------------------------------------------------------------------------
