"""vkec2 as users get it: the wheel, installed with the ``local`` extra in a fresh venv, runs ``vkec2 up``.

The wheel is built from a copy of the sources (no build isolation: setuptools is already here) and
installed offline from a wheelhouse repacked from this environment's distributions
(tests/support/wheelhouse.py), into a venv that does not see this environment's site-packages, run
from a directory outside the checkout with no PYTHONPATH: the example pods ``vkec2 up`` runs must come
from the wheel's package data.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.support import wheelhouse

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "vkec2", "tasks", "producer", "agent"]


def _clean_env() -> dict[str, str]:
    drop = ("PYTHONPATH", "VKEC2_", "PIP_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PIP_CONFIG_FILE"] = os.devnull  # no index, find-links or constraints of this machine
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _build_wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(src),
        ],
        check=True,
        env=_clean_env(),
        timeout=120,
    )
    (wheel,) = dist.glob("vkec2-*.whl")
    return wheel


@pytest.mark.slow
def test_the_wheel_with_the_local_extra_runs_vkec2_up_in_a_fresh_venv(tmp_path: Path) -> None:
    started = time.monotonic()
    wheel = _build_wheel(tmp_path)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    house = tmp_path / "wheelhouse"
    wheelhouse.make([*project["dependencies"], *project["optional-dependencies"]["local"]], house)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-index",
            "--no-compile",
            "--find-links",
            str(house),
            f"vkec2[local] @ {wheel.as_uri()}",
        ],
        check=True,
        env=_clean_env(),
        timeout=300,
    )
    installed = time.monotonic()
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    vkec2 = str(venv / "bin" / "vkec2")
    version = subprocess.run(
        [vkec2, "--version"], capture_output=True, text=True, cwd=run_dir, env=_clean_env(), timeout=60
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"vkec2, version {importlib.metadata.version('vkec2')}"
    where = subprocess.run(
        [str(python), "-c", "import vkec2.cli.localfleet as m; print(m.bundled_manifests())"],
        capture_output=True,
        text=True,
        cwd=run_dir,
        env=_clean_env(),
        timeout=60,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(venv)), f"the examples came from {where}, not from the installed wheel"

    up = subprocess.run(
        [vkec2, "up", "--timeout", "120", "--no-flower"],
        capture_output=True,
        text=True,
        cwd=run_dir,
        env=_clean_env(),
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    out = up.stdout + up.stderr
    assert up.returncode == 0, out[-4000:]
    assert "All example pods are Running." in out
    assert "Stopped." in out
    print(f"install {installed - started:.1f}s, vkec2 up {time.monotonic() - installed:.1f}s")
