"""The ``vkec2`` click group itself: version, help, exit statuses, forwarding and shell completion."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

from vkec2.cli.main import COMMANDS, main

OPERATOR_COMMANDS = [
    "up", "status", "pods", "instances", "hosts", "gc", "replay", "node", "config", "migrate", "infra",
    "bench",
]  # fmt: skip
FORWARDED_PROGRAMS = ["agent", "agent-sim", "producer", "worker", "beat", "flower"]
EVERY_COMMAND = OPERATOR_COMMANDS + FORWARDED_PROGRAMS


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"vkec2, version {importlib.metadata.version('vkec2')}"


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-h"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: vkec2 ")
    assert set(COMMANDS) == set(EVERY_COMMAND)
    for name in EVERY_COMMAND:
        assert f"  {name} " in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "usage: vkec2 "),
        (["explode"], "No such command 'explode'"),
        (["status", "-o", "xml"], "'xml' is not one of 'table', 'json'"),
        (["replay", "vkec2.pods.create"], "Missing option '--uid'"),
        (["up", "--timeout", "soon"], "'soon' is not a valid float"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_forwarded_programs_parse_their_own_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["producer", "--help"]) == 0
    assert "usage: vkec2 producer" in capsys.readouterr().out
    assert main(["agent-sim", "--ec2-endpoint", "http://127.0.0.1:1", "--no-such-flag"]) == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_shell_completion(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("_VKEC2_COMPLETE", "bash_complete")
    monkeypatch.setenv("COMP_WORDS", "vkec2 re")
    monkeypatch.setenv("COMP_CWORD", "1")
    assert main([]) == 0
    assert capsys.readouterr().out.split() == ["plain,replay"]
    monkeypatch.setenv("COMP_WORDS", "vkec2 gc --d")
    monkeypatch.setenv("COMP_CWORD", "2")
    assert main([]) == 0
    assert capsys.readouterr().out.split() == ["plain,--dry-run"]


def test_the_group_loads_a_subcommands_module_only_when_it_runs() -> None:
    code = (
        "import sys, vkec2.cli.main as m\n"
        "assert not {'celery', 'boto3', 'vkec2.cli.fleet'} & set(sys.modules), sorted(sys.modules)\n"
        "assert m.main(['config', 'check', '--help']) == 0\n"
        "assert 'vkec2.cli.config' in sys.modules and 'vkec2.cli.fleet' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
