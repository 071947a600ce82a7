"""Fixtures of the deployment tests: the real `helm` binary and a `Helm` runner per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.helm import Helm
from tests.support.kubetools import helm_path


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_path()


@pytest.fixture
def h(helm: Path, tmp_path: Path) -> Helm:
    return Helm(helm, tmp_path)
