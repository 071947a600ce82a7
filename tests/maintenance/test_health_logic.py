"""Properties of the per-pod health accounting (vkec2.domain.health), checked with hypothesis."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vkec2.config import Backoff
from vkec2.domain.health import Change, HealthPolicy, HealthState, Outcome, next_check_delay, observe

POLICY = HealthPolicy(
    unhealthy_threshold=3, unknown_threshold=5, flapping_window_seconds=100, flapping_count=4
)
outcomes = st.lists(st.sampled_from(list(Outcome)), max_size=80)


def run(seq: list[Outcome], step: float = 1.0) -> list[tuple[HealthState, list[Change]]]:
    state, out = HealthState(), []
    for i, outcome in enumerate(seq):
        state, changes = observe(state, outcome, 1000.0 + i * step, POLICY)
        out.append((state, changes))
    return out


@given(outcomes)
def test_unhealthy_exactly_when_a_threshold_is_reached_since_the_last_ok(seq: list[Outcome]) -> None:
    failures = unknowns = 0
    was_unhealthy = False
    for outcome, (state, changes) in zip(seq, run(seq), strict=True):
        if outcome is Outcome.OK:
            failures = unknowns = 0
        elif outcome is Outcome.FAILED:
            failures += 1
        else:
            unknowns += 1
        reached = failures >= POLICY.unhealthy_threshold or unknowns >= POLICY.unknown_threshold
        assert state.unhealthy == (reached or (was_unhealthy and outcome is not Outcome.OK))
        assert (Change.UNHEALTHY in changes) == (state.unhealthy and not was_unhealthy)
        was_unhealthy = state.unhealthy


@given(st.lists(st.sampled_from([Outcome.FAILED, Outcome.UNKNOWN]), min_size=7, max_size=40))
def test_a_pod_cannot_stay_unknown_or_failing_forever(seq: list[Outcome]) -> None:
    # Without an OK, one of the two counters reaches its threshold within t1 + t2 - 1 checks.
    limit = POLICY.unhealthy_threshold + POLICY.unknown_threshold - 1
    states = run(seq)
    assert states[limit - 1][0].unhealthy


def test_unknown_forever_ends_unhealthy_at_the_unknown_threshold() -> None:
    states = run([Outcome.UNKNOWN] * 10)
    first = next(i for i, (s, _) in enumerate(states) if s.unhealthy)
    assert first == POLICY.unknown_threshold - 1
    assert states[first][1] == [Change.UNHEALTHY]


@given(outcomes, st.floats(min_value=0.1, max_value=50))
@settings(max_examples=200)
def test_flapping_reports_are_damped(seq: list[Outcome], step: float) -> None:
    flapping = False
    for state, changes in run(seq, step):
        if Change.FLAPPING in changes:
            assert not flapping, "Flapping reported twice without a StoppedFlapping between"
            flapping = True
        if Change.STOPPED_FLAPPING in changes:
            assert flapping
            flapping = False
        assert state.flapping == flapping
        assert len(state.transitions) <= POLICY.kept_transitions
        if state.flapping:
            assert Change.RECOVERED not in changes


def test_alternating_agent_is_flapping_after_the_count_and_calm_after_the_window() -> None:
    seq = [Outcome.OK, Outcome.FAILED] * 3
    states = run(seq)
    first = next(i for i, (s, _) in enumerate(states) if s.flapping)
    assert first == POLICY.flapping_count  # transitions at checks 1..4
    assert Change.FLAPPING in states[first][1]
    assert not any(s.unhealthy for s, _ in states)
    state = states[-1][0]
    state, changes = observe(state, Outcome.OK, 1000.0 + 500, POLICY)  # the window has passed
    assert not state.flapping and Change.STOPPED_FLAPPING in changes


@given(
    st.builds(
        HealthState,
        failures=st.integers(0, 9),
        unknowns=st.integers(0, 9),
        last_ok=st.none() | st.booleans(),
        transitions=st.tuples(st.floats(0, 1e9)),
        flapping=st.booleans(),
        unhealthy=st.booleans(),
    )
)
def test_state_survives_the_pod_record(state: HealthState) -> None:
    assert HealthState.from_dict(state.to_dict()) == state


def test_reconnect_backoff_grows_and_is_capped() -> None:
    backoff = Backoff(base_delay_seconds=1, multiplier=2, jitter=0, max_delay_seconds=5)
    assert [next_check_delay(n, backoff) for n in range(5)] == [0, 1, 2, 4, 5]
