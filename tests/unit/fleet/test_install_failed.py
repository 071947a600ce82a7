"""The create step turns the installer's console marker into AgentInstallFailed, read at a bounded rate."""

from __future__ import annotations

import time

from tests.unit.fleet.world import World
from vkec2.config import Settings
from vkec2.contract import AGENT_INSTALL_FAILED, INSTALL_FAILED_MARKER, TAG_CLUSTER
from vkec2.domain.iampolicy import PolicyInputs, workers_policy
from vkec2.domain.models import Phase
from vkec2.fleet.installcheck import CONSOLE_CHECK_SECONDS, install_failure

CONSOLE = (
    "[   10.1] cloud-init[1201]: vkec2: installing the agent from s3://b/k\n"
    f"[   11.4] cloud-init[1201]: {INSTALL_FAILED_MARKER}: the agent needs Python >= 3.10 "
    "(looked for python3.13, 3.12, 3.11, 3.10, python3; found: python3=3.7)\r\n"
    "[   11.5] cloud-init[1201]: Failed to run module scripts-user\n"
)


def test_the_marker_reason_is_read_from_a_console() -> None:
    assert install_failure(CONSOLE) == (
        "the agent needs Python >= 3.10 (looked for python3.13, 3.12, 3.11, 3.10, python3; "
        "found: python3=3.7)"
    )
    assert install_failure("booting\nall fine\n") is None
    assert (
        install_failure(f"{INSTALL_FAILED_MARKER}: \x1b[31mfirst\x1b[0m\n{INSTALL_FAILED_MARKER}: last")
        == "last"
    )
    assert install_failure(f"{INSTALL_FAILED_MARKER}:\n") == "the agent's installer failed without a reason"
    assert len(install_failure(f"{INSTALL_FAILED_MARKER}: {'x' * 5000}") or "") == 400


def test_a_marker_on_the_console_fails_the_pod_with_its_reason(world: World) -> None:
    inst = world.instance()
    world.seed(Phase.BOOTING, instance=inst, launched_at=time.time() - CONSOLE_CHECK_SECONDS - 1)
    world.agents.serving_default = False
    world.ec2.console[inst["InstanceId"]] = CONSOLE

    assert world.step() is None
    rec = world.rec
    assert (rec.phase, rec.reason) == (Phase.FAILED, AGENT_INSTALL_FAILED)
    assert "needs Python >= 3.10" in rec.message and "python3=3.7" in rec.message
    assert inst["InstanceId"] in rec.message
    assert world.ec2.terminated() == [inst["InstanceId"]]  # the broken instance is not kept
    assert [e.reason for e in world.events][-1] == AGENT_INSTALL_FAILED


def test_the_console_is_read_at_most_once_per_interval(world: World) -> None:
    inst = world.instance()
    world.seed(Phase.BOOTING, instance=inst)  # launched just now: no install fails that fast
    world.agents.serving_default = False

    def reads() -> int:
        return sum(1 for action, _ in world.ec2.calls if action == "GetConsoleOutput")

    world.step()
    assert reads() == 0
    world.seed(Phase.BOOTING, instance=inst, launched_at=time.time() - CONSOLE_CHECK_SECONDS - 1)
    world.step()
    world.step()
    world.step()
    assert reads() == 1  # clean console: still booting, and not read again within the interval
    assert world.rec.phase is Phase.BOOTING


def test_workers_may_read_only_their_own_instances_consoles() -> None:
    policy = workers_policy(Settings(), PolicyInputs(account="123456789012"))
    (read,) = [s for s in policy["Statement"] if "ec2:GetConsoleOutput" in str(s["Action"])]
    assert read["Resource"].endswith(":instance/*")
    assert read["Condition"]["StringEquals"] == {f"aws:ResourceTag/{TAG_CLUSTER}": "vkec2"}


def test_the_pinned_artifacts_folder_is_the_artifact_statement() -> None:
    artifact = {
        "url": "s3://vk-art/agent/v2/vkec2-agent-{platform}.tar.gz",
        "sha256": {"macos-arm64": "ab" * 32},
    }
    settings = Settings.model_validate({"agent": {"artifact": artifact}})
    policy = workers_policy(settings, PolicyInputs(account="123456789012"))
    (read,) = [s for s in policy["Statement"] if s["Sid"] == "AgentArtifact"]
    assert read["Resource"] == "arn:aws:s3:::vk-art/agent/v2/*"
