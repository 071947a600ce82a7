"""A pod lock dies with its holder in seconds but lives as long as a live step: the lock settings.

A held lock is kept alive by its process's heartbeat (vkec2/store/heartbeat.py), so
``celery.lock_ttl_seconds`` only says how soon a dead worker's pod is free again; what must cover
the EC2 calls of one create step (three RunInstances and a describe, each every botocore attempt
timing out plus the longest wait for a fleet rate-limit token) is ``celery.lock_max_hold_seconds``,
and configuration refuses one that cannot, naming the settings involved.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vkec2.config import Settings, load_settings
from vkec2.config.model import STEP_EC2_CALLS
from vkec2.errors import ConfigError


def test_the_defaults_hold() -> None:
    settings = Settings()
    assert settings.ec2_call_worst_seconds() == 5 * (2 + 10) + 20
    assert STEP_EC2_CALLS * settings.ec2_call_worst_seconds() <= settings.celery.lock_max_hold_seconds
    assert settings.celery.lock_ttl_seconds == 15


def test_a_max_hold_shorter_than_a_step_is_refused_naming_the_settings(tmp_path: Path) -> None:
    path = tmp_path / "short.yaml"
    path.write_text("celery:\n  lock_max_hold_seconds: 300\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    text = str(err.value)
    assert "celery.lock_max_hold_seconds (300)" in text and "320s" in text
    assert "aws.read_timeout_seconds" in text and "rate_limits.max_wait_seconds" in text


def test_a_lock_ttl_too_short_to_be_kept_alive_is_refused() -> None:
    with pytest.raises(ValueError, match="lock_ttl_seconds"):
        Settings.model_validate({"celery": {"lock_ttl_seconds": 1}})


def test_settings_that_fit_are_accepted() -> None:
    fits = Settings.model_validate(
        {"celery": {"lock_max_hold_seconds": 120}, "aws": {"max_attempts": 2, "read_timeout_seconds": 3}}
    )
    assert fits.ec2_call_worst_seconds() == 2 * (2 + 3) + 20
    no_limiter = Settings.model_validate(
        {"celery": {"lock_max_hold_seconds": 240}, "rate_limits": {"enabled": False}}
    )
    assert no_limiter.ec2_call_worst_seconds() == 60
