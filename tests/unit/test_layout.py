"""The shape of the house: no oversized module, and the layer picture in docs/architecture.md current.

A module above :data:`MAX_LINES` lines holds more than one concern; generated gRPC code and the
test doubles that model a whole foreign service (the Kubernetes API server) are the only exceptions,
named here. The picture is regenerated from the imports by ``scripts/house.py`` (``make house``), which
also refuses to draw an arrow against the layers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 500
PACKAGES = ("vkec2", "tasks", "producer", "agent", "tests", "bench", "scripts")
#: Generated code and whole-service test doubles, exempt from the size limit.
EXEMPT = {"tests/k8s/apiserver.py"}


def _exempt(path: str) -> bool:
    return path in EXEMPT or (path.startswith("agent/v1/") and "_pb2" in path)


def test_no_module_is_above_the_size_limit() -> None:
    too_long = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            lines = len(path.read_text().splitlines())
            if lines > MAX_LINES and not _exempt(rel):
                too_long[rel] = lines
    assert not too_long, f"modules above {MAX_LINES} lines (split them by concern): {too_long}"


def test_the_house_picture_is_generated_from_the_imports() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "house.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
