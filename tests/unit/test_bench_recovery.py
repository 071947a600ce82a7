"""The recovery benchmark's command line: ``--help`` works and a count below one is a usage error
(exit 2 naming the flag) before any server starts. The figures themselves come from running it."""

from __future__ import annotations

import pytest

from bench.bench_recovery import main


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "--quick" in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--pods", "--worker-kills", "--beat-kills", "--loss-pods"])
def test_a_count_below_one_is_a_usage_error(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--quick", flag, "0"])
    assert exit_.value.code == 2
    assert f"{flag} must be at least 1" in capsys.readouterr().err
