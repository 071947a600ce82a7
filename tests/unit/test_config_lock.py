"""The pod lock must outlast one EC2 call: configuration refuses a ``celery.lock_ttl_seconds`` that cannot.

A step extends the pod's lock immediately before each side effect (the guard), so the lock must
then outlive the longest the following EC2 call can take: every botocore attempt timing out after
connecting and reading, plus the longest wait for a fleet rate-limit token.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vkec2.config import Settings, load_settings
from vkec2.errors import ConfigError


def test_the_defaults_hold() -> None:
    settings = Settings()
    assert settings.ec2_call_worst_seconds() == 5 * (2 + 10) + 20 <= settings.celery.lock_ttl_seconds


def test_a_lock_ttl_shorter_than_one_ec2_call_is_refused_naming_both_settings(tmp_path: Path) -> None:
    path = tmp_path / "short.yaml"
    path.write_text("celery:\n  lock_ttl_seconds: 30\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    text = str(err.value)
    assert "celery.lock_ttl_seconds (30)" in text and "80s" in text
    assert "aws.read_timeout_seconds" in text and "rate_limits.max_wait_seconds" in text


def test_settings_that_fit_are_accepted() -> None:
    fits = Settings.model_validate(
        {"celery": {"lock_ttl_seconds": 30}, "aws": {"max_attempts": 2, "read_timeout_seconds": 3}}
    )
    assert fits.ec2_call_worst_seconds() == 2 * (2 + 3) + 20
    no_limiter = Settings.model_validate(
        {"celery": {"lock_ttl_seconds": 60}, "rate_limits": {"enabled": False}}
    )
    assert no_limiter.ec2_call_worst_seconds() == 60
