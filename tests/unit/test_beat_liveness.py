"""Beat liveness (vkec2.domain.beat), its default period, and the errors of the breaker and beat settings."""

from __future__ import annotations

import pytest

from vkec2.config import Settings, load_settings
from vkec2.domain.beat import BeatSignals, beat_liveness
from vkec2.errors import ConfigError


def test_a_held_lock_is_a_live_beat_however_old_the_last_run() -> None:
    verdict = beat_liveness(BeatSignals(lock_held=True, last_run=0.0), 10_000.0, 60.0)
    assert not verdict.missing and verdict.reason == "BeatActive"


def test_without_the_lock_the_last_run_decides() -> None:
    recent = beat_liveness(BeatSignals(lock_held=False, last_run=950.0), 1000.0, 60.0)
    assert not recent.missing and "ran 50s ago" in recent.message
    stale = beat_liveness(BeatSignals(lock_held=False, last_run=900.0), 1000.0, 60.0)
    assert stale.missing and stale.reason == "BeatMissing" and "for 100s" in stale.message


def test_a_fleet_where_nothing_ever_ran_misses_its_beat() -> None:
    verdict = beat_liveness(BeatSignals(lock_held=False, last_run=0.0), 1000.0, 60.0)
    assert verdict.missing and verdict.reason == "BeatMissing" and "celery -A tasks beat" in verdict.message


def test_the_default_liveness_is_three_shortest_periods_at_least_a_minute() -> None:
    assert Settings().beat_liveness_seconds() == 60.0
    slow = Settings.model_validate(
        {
            "health": {"interval_seconds": 40},
            "beat": {
                "warm_pools_interval_seconds": 50,
                "resume_interval_seconds": 60,
                "pod_tags_interval_seconds": 60,
            },
            "status_interval_seconds": 45,
        }
    )
    assert slow.beat_liveness_seconds() == 120.0
    assert Settings.model_validate({"beat": {"liveness_seconds": 15}}).beat_liveness_seconds() == 15.0


def test_bad_breaker_and_liveness_settings_name_the_key() -> None:
    env = {
        "VKEC2_HEALTH__BREAKER_SHARE": "1.5",
        "VKEC2_HEALTH__MAX_REMEDIATIONS_PER_INTERVAL": "0",
        "VKEC2_BEAT__LIVENESS_SECONDS": "-1",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(env=env)
    text = caught.value.message
    assert "health.breaker_share: Input should be less than 1" in text
    assert "health.max_remediations_per_interval: Input should be greater than or equal to 1" in text
    assert "beat.liveness_seconds: Input should be greater than 0" in text
