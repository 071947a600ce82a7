"""The fleet image (compose/Dockerfile) and its lock files, checked without a Docker engine.

The Dockerfile is parsed: a pinned base image, a build stage and a slim non-root runtime, dependencies
installed only from ``requirements.lock`` with hashes, and ``vkec2`` as the entry point. Every role
that compose/compose.yaml and the Helm chart's templates run in the image is collected from their
commands and must be a real ``vkec2`` subcommand whose ``--help`` exits 0 (the chart's
``celery -A tasks ROLE`` is the same program as ``vkec2 ROLE``). The lock files must pin, with hashes,
every runtime dependency pyproject.toml declares, at a version its specifier allows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from vkec2.cli.main import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "compose" / "Dockerfile"
COMPOSE = ROOT / "compose" / "compose.yaml"
TEMPLATES = ROOT / "helm" / "vkec2" / "templates"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(x for x in text.splitlines() if not x.lstrip().startswith("#")))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in joined.splitlines()
        if line.strip()
    ]


def _entrypoint() -> list[str]:
    entry = [json.loads(args) for op, args in _instructions(DOCKERFILE.read_text()) if op == "ENTRYPOINT"]
    assert entry, "compose/Dockerfile has no ENTRYPOINT"
    result: list[str] = entry[-1]
    return result


def _compose_roles() -> set[str]:
    roles = set()
    for name, service in yaml.safe_load(COMPOSE.read_text())["services"].items():
        if name == "redis":
            continue
        argv = [*service.get("entrypoint", _entrypoint()), *service.get("command", [])]
        if argv[0] == "vkec2":
            roles.add(argv[1])
        elif argv[:2] == ["sh", "-c"]:
            roles.update(re.findall(r"exec vkec2 (\S+)", argv[2]))
    return roles


def _helm_roles() -> set[str]:
    """The roles of the chart's containers: ``command: ["vkec2", ROLE]``, or ``["celery"]`` with
    ``-A tasks ROLE`` as its first args."""
    roles = set()
    for template in sorted(TEMPLATES.glob("*.yaml")):
        lines = template.read_text().splitlines()
        for i, line in enumerate(lines):
            match = re.match(r"\s*command: (\[.*\])\s*$", line)
            if not match:
                continue
            command = json.loads(match.group(1))
            args = []
            if lines[i + 1].strip() == "args:":
                for item in lines[i + 2 :]:
                    arg = re.match(r"\s*- (\S+)$", item)
                    if not arg:
                        break
                    args.append(arg.group(1))
            if command[0] == "vkec2":
                roles.add(command[1])
            elif command == ["celery"]:
                assert args[:2] == ["-A", "tasks"], (template.name, args)
                roles.add(args[2])
    return roles


def _lock(name: str) -> dict[str, tuple[str, int]]:
    """Package -> (pinned version, number of hashes) of a pip-compile lock file."""
    pins: dict[str, tuple[str, int]] = {}
    current = None
    for line in (ROOT / name).read_text().splitlines():
        pin = _PIN.match(line)
        if pin:
            current = canonicalize_name(pin.group(1))
            pins[current] = (pin.group(2), 0)
        elif current and _HASH.search(line):
            version, hashes = pins[current]
            pins[current] = (version, hashes + len(_HASH.findall(line)))
        elif line and not line.startswith((" ", "#")):
            current = None
    return pins


def test_the_image_is_multi_stage_pinned_non_root_and_installs_from_the_lock() -> None:
    ops = _instructions(DOCKERFILE.read_text())
    args = dict(a.split("=", 1) for op, a in ops if op == "ARG" and "=" in a)
    bases = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], a.split()[0]) for op, a in ops if op == "FROM"
    ]
    stages = [a.split()[-1] for op, a in ops if op == "FROM" and " AS " in a.upper()]
    assert {"build", "fleet", "local"} <= set(stages) and len(bases) >= 3
    for base in bases:
        if base not in stages:  # an external image: an exact version tag or a digest
            assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    assert bases[-1] == "fleet", "the default target is the production runtime, without moto"
    runs = " ".join(a for op, a in ops if op == "RUN")
    assert "pip wheel --require-hashes --wheel-dir /wheels -r requirements.lock" in runs
    assert "--no-index --find-links /wheels --require-hashes -r /tmp/requirements.lock" in runs
    users = [a for op, a in ops if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert _entrypoint() == ["vkec2"]


def test_every_role_the_deployments_run_is_a_vkec2_subcommand_whose_help_works() -> None:
    compose, helm = _compose_roles(), _helm_roles()
    assert {"producer", "worker", "beat", "flower", "agent-sim"} <= compose
    assert {"producer", "worker", "beat", "flower"} <= helm
    roles = sorted(compose | helm)
    for role in roles:
        assert role in COMMANDS, f"vkec2 has no subcommand {role!r}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VKEC2_")}
    env |= {"VKEC2_CONFIG": str(ROOT / "compose" / "config.local.yaml"), "PYTHONPATH": str(ROOT)}
    procs = {
        role: subprocess.Popen(
            [sys.executable, "-m", "vkec2.cli", role, "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
        )
        for role in roles
    }
    for role, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"vkec2 {role} --help: {out.decode()[-2000:]}"
        assert b"usage" in out.lower(), role


def _runtime_requirements(extra: str | None = None) -> list[Requirement]:
    project: dict[str, Any] = PYPROJECT["project"]
    declared = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(r) for r in declared]


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    lock = _lock("requirements.lock")
    assert lock and all(hashes > 0 for _, hashes in lock.values()), "every pin carries hashes"
    for requirement in _runtime_requirements():
        name = canonicalize_name(requirement.name)
        assert name in lock, f"requirements.lock lacks {requirement.name}"
        assert requirement.specifier.contains(lock[name][0], prereleases=True), (requirement, lock[name])
    assert "moto" not in lock and "flask" not in lock, "the production lock holds nothing of the local fleet"


def test_the_local_lock_adds_moto_at_the_same_versions() -> None:
    lock, local = _lock("requirements.lock"), _lock("requirements-local.lock")
    assert all(hashes > 0 for _, hashes in local.values())
    for requirement in _runtime_requirements("local"):
        name = canonicalize_name(requirement.name)
        assert name in local and requirement.specifier.contains(local[name][0], prereleases=True)
    for pinned, (version, _) in lock.items():
        assert local.get(pinned, (version, 0))[0] == version, f"{pinned}: the two locks disagree"
