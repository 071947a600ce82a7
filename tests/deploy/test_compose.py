"""The docker compose stack (compose/compose.yaml) and its image (compose/Dockerfile), checked statically.

No Docker engine is needed: the file is parsed, its services and profiles are checked, every command is
matched against the real command-line parsers and modules it names, and the local configuration passes
``vkec2 config check`` with the environment the stack gives it. Compose variable interpolation is applied
with defaults only (``${VAR:-default}``), as on a machine that sets none of them.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.sim.simulator import build_parser as sim_parser
from producer.options import build_parser as producer_parser
from vkec2.cli.main import COMMANDS

Obj = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"

_VAR = re.compile(r"(?<!\$)\$\{([A-Z0-9_]+)(?::-([^${}]*))?\}")


def _interpolate(value: Any) -> Any:
    """Compose's ``${VAR:-default}`` (nested too) with nothing set; ``$$`` stays a literal ``$``."""
    if isinstance(value, str):
        while True:
            done = _VAR.sub(lambda m: m.group(2) or "", value)
            if done == value:
                return done.replace("$$", "$")
            value = done
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> Obj:
    data: Obj = _interpolate(yaml.safe_load(COMPOSE.read_text()))
    return data


@pytest.fixture(scope="module")
def services(compose: Obj) -> dict[str, Obj]:
    result: dict[str, Obj] = compose["services"]
    return result


def _argv(service: Obj) -> list[str]:
    """What the container runs: the service's entrypoint, else the image's (compose/Dockerfile),
    then its command."""
    entrypoint = service.get("entrypoint")
    if entrypoint is None:
        match = re.search(r"^ENTRYPOINT (\[.*\])$", DOCKERFILE.read_text(), re.M)
        assert match is not None, "compose/Dockerfile has no ENTRYPOINT"
        entrypoint = json.loads(match.group(1))
    return [*entrypoint, *service.get("command", [])]


def _env(service: Obj) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment is written as a mapping"
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _mounts(service: Obj) -> dict[str, str]:
    """container path -> host path of the bind mounts (relative to compose/)."""
    result = {}
    for volume in service.get("volumes", []):
        host, container, *_ = volume.split(":")
        result[container] = host
    return result


def test_services_and_profiles(services: dict[str, Obj]) -> None:
    profiles = {name: tuple(s.get("profiles", ())) for name, s in services.items()}
    assert profiles == {
        "redis": (),
        "worker": (),
        "beat": (),
        "flower": (),
        "producer": ("cluster",),
        "moto": ("local",),
        "agent-sim": ("local",),
        "producer-local": ("local",),
    }
    # Every service of the vkec2 image is built from compose/Dockerfile with the repository as context.
    for name, service in services.items():
        if name == "redis":
            continue
        build = service["build"]
        assert (COMPOSE_DIR / build["context"]).resolve() == ROOT
        assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_dependencies_name_real_services(services: dict[str, Obj]) -> None:
    for name, service in services.items():
        for dep, cond in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}, which has no healthcheck"
            # A dependency outside the service's profiles must be optional.
            if set(services[dep].get("profiles", [])) - set(service.get("profiles", [])):
                assert cond.get("required") is False or service.get("profiles"), f"{name} -> {dep}"


def test_celery_commands(services: dict[str, Obj]) -> None:
    from vkec2.contract import QUEUES

    assert importlib.util.find_spec("tasks") is not None
    worker = _argv(services["worker"])
    assert worker[:2] == ["vkec2", "worker"]
    assert worker[worker.index("-Q") + 1].split(",") == list(QUEUES)
    assert worker[worker.index("-P") + 1] == "threads"
    assert int(worker[worker.index("-c") + 1]) >= 1
    beat = _argv(services["beat"])
    assert beat[:2] == ["vkec2", "beat"]
    scheduler = beat[beat.index("-S") + 1]
    module, _, cls = scheduler.rpartition(".")
    assert hasattr(importlib.import_module(module), cls)
    flower = _argv(services["flower"])
    assert flower[:2] == ["sh", "-c"]
    assert "exec vkec2 flower" in flower[2]
    assert 'test -n "$FLOWER_BASIC_AUTH"' in flower[2]
    assert "FLOWER_BASIC_AUTH" in _env(services["flower"])
    # Flower is published on loopback only.
    assert all(port.startswith("127.0.0.1:") for port in services["flower"]["ports"])


def test_vkec2_commands_parse(services: dict[str, Obj]) -> None:
    parsers = {"producer": producer_parser, "agent-sim": sim_parser}
    seen = set()
    for name, service in services.items():
        command = _argv(service) if name != "redis" else []
        if not command or command[0] != "vkec2":
            continue
        sub = command[1]
        assert sub in COMMANDS, f"{name}: vkec2 has no command {sub!r}"
        if sub in parsers:
            parsers[sub]().parse_args(command[2:])  # exits (SystemExit) on an unknown flag
        seen.add(sub)
    assert seen == {"producer", "agent-sim", "worker", "beat"}

    cluster = producer_parser().parse_args(_argv(services["producer"])[2:])
    assert cluster.kubeconfig in _mounts(services["producer"]) and cluster.manifests is None
    local = producer_parser().parse_args(_argv(services["producer-local"])[2:])
    assert local.manifests == "/opt/vkec2/examples/pods"
    assert "COPY vkec2/examples /opt/vkec2/examples" in DOCKERFILE.read_text()
    assert sorted((ROOT / "vkec2" / "examples" / "pods").glob("*.yaml"))


def test_local_profile_is_wired_together(services: dict[str, Obj]) -> None:
    moto = _argv(services["moto"])
    assert moto[:3] == ["python", "-m", "moto.server"]
    assert importlib.util.find_spec("moto.server") is not None
    moto_port = moto[moto.index("-p") + 1]
    assert services["moto"]["build"]["target"] == "local"  # the image with moto's server
    sim = sim_parser().parse_args(_argv(services["agent-sim"])[2:])
    assert sim.ec2_endpoint == f"http://moto:{moto_port}"
    sim_port = sim.listen.rpartition(":")[2]

    config = yaml.safe_load((COMPOSE_DIR / "config.local.yaml").read_text())
    assert config["aws"]["endpoint_url"] == f"http://moto:{moto_port}"
    assert config["agent"]["endpoint"] == f"static:agent-sim:{sim_port}"


def test_vkec2_services_read_the_mounted_configuration(services: dict[str, Obj], tmp_path: Path) -> None:
    fleet = ["worker", "beat", "flower", "producer", "producer-local"]
    for name in fleet:
        env = _env(services[name])
        mounts = _mounts(services[name])
        assert env["VKEC2_CONFIG"] in mounts, name
        host = COMPOSE_DIR / mounts[env["VKEC2_CONFIG"]]
        assert host.resolve() == (COMPOSE_DIR / "config.local.yaml").resolve()
        assert env["VKEC2_REDIS_URL"] == "redis://:@redis:6379/0"  # REDIS_PASSWORD unset: Redis refuses

    # The local configuration, with the environment of a worker, passes vkec2's own check.
    env = {k: v for k, v in os.environ.items() if not k.startswith("VKEC2_")}
    env.update({k: v for k, v in _env(services["worker"]).items() if k.startswith("VKEC2_")})
    env.pop("VKEC2_CONFIG")
    proc = subprocess.run(
        [sys.executable, "-m", "vkec2.cli", "config", "check", str(COMPOSE_DIR / "config.local.yaml")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    effective = yaml.safe_load(proc.stdout)
    assert effective["redis_url"] == "redis://:@redis:6379/0"


def test_redis_requires_a_password_and_the_kubelet_port_stays_on_loopback(services: dict[str, Obj]) -> None:
    redis = services["redis"]
    script = redis["command"][2]
    assert redis["command"][:2] == ["sh", "-c"]
    assert 'test -n "$REDIS_PASSWORD" ||' in script and "exit 64" in script
    assert "requirepass $REDIS_PASSWORD" in script  # from stdin, in no argument
    assert _env(redis)["REDISCLI_AUTH"] == _env(redis)["REDIS_PASSWORD"] == ""  # only from compose/.env
    compose_text = COMPOSE.read_text()
    assert "VKEC2_REDIS_URL:-redis://:${REDIS_PASSWORD:-}@redis:6379/0" in compose_text
    # No port of the stack is published on every interface.
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)


def test_dockerfile_installs_the_distribution(services: dict[str, Obj]) -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^RUN pip wheel --no-deps --wheel-dir /dist \.$", text, re.M)
    copied = set(re.findall(r"^COPY (\S+) ", text, re.M))
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for pattern in packages["include"]:
        assert pattern.rstrip("*") in copied, f"{pattern} is not copied into the image"
    assert "pyproject.toml" in copied
    # The image's user is the one the Helm chart runs as.
    user = re.search(r"^USER (\d+)", text, re.M)
    assert user is not None
    values = yaml.safe_load((ROOT / "helm" / "vkec2" / "values.yaml").read_text())
    assert int(user.group(1)) == values["podSecurityContext"]["runAsUser"]


def _listen_port(name: str, service: Obj) -> set[int]:
    """The ports a service listens on inside its container, from its command and environment."""
    command = [str(c) for c in service.get("command", [])]
    ports: set[int] = set()
    if name in ("producer", "producer-local"):
        options = producer_parser().parse_args(command[1:])
        ports.add(options.kubelet_port or 10250)  # node.kubelet_port's default
    if name == "agent-sim":
        ports.add(int(sim_parser().parse_args(command[1:]).listen.rpartition(":")[2]))
    if name == "flower":
        ports.update(int(p) for p in re.findall(r"--port=(\d+)", " ".join(command)))
    if name == "moto":
        ports.add(int(command[command.index("-p") + 1]))
    return ports


def test_every_service_has_a_healthcheck_that_checks_what_it_serves(services: dict[str, Obj]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        test = check["test"]
        assert test[0] in ("CMD", "CMD-SHELL"), (name, test)
        assert {"interval", "timeout", "retries"} <= set(check), name
        text = " ".join(test[1:])
        if test[1:3] == ["python", "-c"]:
            compile(test[3], f"<{name} healthcheck>", "exec")  # the snippet is valid Python
        # A check that dials a port dials one the service listens on.
        dialled = {int(p) for p in re.findall(r"127\.0\.0\.1'?[:,] ?(\d+)", text)}
        assert dialled <= _listen_port(name, service), (name, dialled)
        if name in ("flower", "producer", "producer-local", "moto", "agent-sim"):
            assert dialled, f"{name}'s healthcheck dials no port"
    assert "inspect ping --destination celery@$HOSTNAME" in services["worker"]["healthcheck"]["test"][1]
    assert "/healthcheck" in services["flower"]["healthcheck"]["test"][3]
    assert "https://127.0.0.1:10250/healthz" in services["producer"]["healthcheck"]["test"][3]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "REDISCLI_AUTH" in _env(services["redis"])  # the ping authenticates
    # Whoever waits for the simulator waits for it to listen.
    assert services["producer-local"]["depends_on"]["agent-sim"]["condition"] == "service_healthy"


def test_the_node_ip_and_the_kubelet_bind_are_configurable(services: dict[str, Obj]) -> None:
    raw = yaml.safe_load(COMPOSE.read_text())["services"]["producer"]
    assert "${VKEC2_NODE_IP:-127.0.0.1}" in raw["command"]
    assert raw["ports"] == ["${VKEC2_KUBELET_BIND:-127.0.0.1}:10250:10250"]
    # Unset: the node advertises loopback and the port is published on loopback only.
    options = producer_parser().parse_args(services["producer"]["command"][1:])
    assert options.node_ip == "127.0.0.1"
    assert services["producer"]["ports"] == ["127.0.0.1:10250:10250"]
    # Set: both follow the environment (compose's ${VAR:-default} with VAR given).
    given = {"VKEC2_NODE_IP": "10.1.2.3", "VKEC2_KUBELET_BIND": "10.1.2.3"}
    command = [_VAR.sub(lambda m: given.get(m.group(1), m.group(2) or ""), c) for c in raw["command"]]
    assert producer_parser().parse_args(command[1:]).node_ip == "10.1.2.3"
    assert _VAR.sub(lambda m: given.get(m.group(1), ""), raw["ports"][0]) == "10.1.2.3:10250:10250"
