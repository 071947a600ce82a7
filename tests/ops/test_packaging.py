"""What a non-editable install relies on: the example pods as package data, the ``local`` extra's check
before ``vkec2 up`` starts anything, and the distribution's LICENSE and extras."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from rich.console import Console

from vkec2.cli import localfleet
from vkec2.cli.localfleet import UpError, UpOptions, bundled_manifests, check_local_extra, run

ROOT = Path(__file__).resolve().parents[2]


def test_the_bundled_examples_are_the_package_data_pyproject_ships() -> None:
    names = sorted(f.name for f in bundled_manifests().iterdir() if f.name.endswith(".yaml"))
    assert localfleet.REMOVED_MANIFEST in names and len(names) >= 3
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert data["vkec2.examples.pods"] == ["*.yaml"]
    # The ConfigMap and the Secret the configured report pod reads ship beside it.
    assert {"report-settings.yaml", "report-credentials.yaml", "report-with-config.yaml"} <= set(names)
    # examples/ at the root is the same directory, for the README's paths.
    assert (ROOT / "examples").resolve() == (ROOT / "vkec2" / "examples").resolve()


def test_up_without_the_local_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localfleet, "LOCAL_EXTRA_MODULES", ("moto", "vkec2_no_such_module"))
    with pytest.raises(UpError, match=r"missing: vkec2_no_such_module.*pip install 'vkec2\[local\]'"):
        check_local_extra()
    # run() checks first: nothing is started, no directory is made.
    with pytest.raises(UpError, match=r"vkec2\[local\]"):
        run(UpOptions(None, None, False, True, 1.0), Console())


def test_up_refuses_a_directory_without_manifests(tmp_path: Path) -> None:
    with pytest.raises(UpError, match=f"no pod manifests \\(\\*.yaml\\) in {tmp_path}"):
        run(UpOptions(str(tmp_path), None, False, True, 1.0), Console())


def test_the_distribution_declares_its_license_and_keeps_moto_out_of_the_core() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert not [d for d in project["dependencies"] if d.lower().startswith(("moto", "flask"))]
    assert any(d.startswith("moto[server") for d in project["optional-dependencies"]["local"])
