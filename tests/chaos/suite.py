"""One chaos pass: the shared services, every selected scenario in turn, bounded, always cleaned up.

:func:`run_suite` spreads the pass's pods over the selected scenarios, runs them one after the
other on fresh fleets (skipping the rest once the total deadline has passed), and stops every
process it started and removes its temporary directory on the way out — also on an error or
Ctrl-C. Process logs go to that directory; ``keep`` leaves it in place for a post-mortem.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.chaos.processes import Services
from tests.chaos.scenarios import BY_NAME, SCENARIOS, Pass, Result, run_scenario

#: Dummy credentials for moto, set whatever the environment holds: the suite never reaches AWS.
MOTO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-west-2",
}


def select(only: Sequence[str] = ()) -> list[str]:
    """The scenario names to run, in the suite's order; an unknown name is an error naming it."""
    unknown = [name for name in only if name not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    return [s.name for s in SCENARIOS if not only or s.name in only]


def spread(total: int) -> dict[str, int]:
    """``total`` pods over all scenarios, as evenly as can be (at least one each); ``--only`` runs
    a scenario with its share."""
    base, extra = divmod(total, len(SCENARIOS))
    return {s.name: max(1, base + (i < extra)) for i, s in enumerate(SCENARIOS)}


@contextlib.contextmanager
def _workspace(keep: bool) -> Iterator[Path]:
    """A temporary directory that also receives every process log (``tempfile.tempdir``)."""
    root = Path(tempfile.mkdtemp(prefix="vkec2-chaos-"))
    saved_tempdir, saved_env = tempfile.tempdir, {k: os.environ.get(k) for k in MOTO_CREDENTIALS}
    tempfile.tempdir = str(root)
    os.environ.update(MOTO_CREDENTIALS)
    try:
        yield root
    finally:
        tempfile.tempdir = saved_tempdir
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if keep:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def run_suite(size: Pass, *, seed: int = 1, only: Sequence[str] = (), keep: bool = False) -> list[Result]:
    names = select(only)
    pods = spread(size.pods_total)
    total_deadline = time.monotonic() + size.total_deadline
    results: list[Result] = []
    with _workspace(keep) as root:
        services = Services(str(root))
        try:
            services.start(seed)
            for i, name in enumerate(names):
                if time.monotonic() > total_deadline:
                    results.append(Result(name, pods[name], error="not run: the total deadline passed"))
                    continue
                results.append(run_scenario(services, root, BY_NAME[name], pods[name], size, seed + i))
        finally:
            services.stop()
    return results
