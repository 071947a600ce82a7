"""The README's main-job command: ``vkec2 up`` runs the example pods to Running, removes one, exits 0."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_vkec2_up_runs_the_examples_then_terminates_one_and_exits_cleanly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vkec2.cli", "up", "--timeout", "180"],
        capture_output=True,
        text=True,
        timeout=400,
        stdin=subprocess.DEVNULL,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "All example pods are Running." in out and "All example pods are Ready." in out
    # The configured report's first line is built from its ConfigMap; its readiness probe checks
    # the Secret's value arrived: the workloads really ran, with what the producer resolved.
    assert "Nightly fleet report (markdown)" in out
    assert "nightly-report terminated; instance(s) gone." in out
    assert '"ec2_calls"' in out and "Stopped." in out


def test_vkec2_up_names_a_bad_manifest_directory(tmp_path: object) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vkec2.cli", "up", "--manifests", "/nonexistent/pods"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert "no pod manifests (*.yaml) in /nonexistent/pods" in result.stdout + result.stderr
