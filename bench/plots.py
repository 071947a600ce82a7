"""The fleet benchmark's plots (matplotlib, Agg backend, small PNGs into docs/img/).

:func:`latency_cdf` draws create→Running latency distributions (warm against cold) as CDFs;
:func:`scaling` draws throughput against the worker count beside the limit line. Each returns the
path relative to ``docs/`` that a :class:`~bench.common.Result` lists in ``plots``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.common import PLOTS_DIR

SIZE = (6.0, 3.6)
DPI = 80  # ~480 x 290 pixels: a few tens of KB


def _save(name: str) -> str:
    PLOTS_DIR.mkdir(parents=True, exist_ok=True)
    path: Path = PLOTS_DIR / name
    plt.tight_layout()
    plt.savefig(path, dpi=DPI)
    plt.close()
    return f"img/{name}"


def latency_cdf(samples: Mapping[str, Sequence[float]], name: str = "fleet-latency-cdf.png") -> str | None:
    """One CDF line per label of create→Running seconds (log x axis); None without samples."""
    drawn = {label: sorted(v) for label, v in samples.items() if v}
    if not drawn:
        return None
    plt.figure(figsize=SIZE)
    for label, values in drawn.items():
        ys = [(i + 1) / len(values) for i in range(len(values))]
        plt.step(values, ys, where="post", label=label)
    plt.xscale("log")
    plt.xlabel("create→Running (s)")
    plt.ylabel("share of pods")
    plt.title("create→Running: warm vs cold")
    plt.grid(True, which="both", alpha=0.3)
    plt.legend(fontsize=7)
    return _save(name)


def scaling(
    workers: Sequence[int], rates: Sequence[float], limits: Sequence[float], name: str = "fleet-scaling.png"
) -> str | None:
    """Throughput per worker count with the limit line; None without points."""
    if not workers:
        return None
    plt.figure(figsize=SIZE)
    plt.plot(workers, rates, "o-", label="fleet")
    plt.plot(workers, limits, "--", color="grey", label="limit (serial baseline)")
    plt.xticks(list(workers))
    plt.xlabel("worker processes (8 threads each)")
    plt.ylabel("pods/s to Running")
    plt.ylim(bottom=0)
    plt.title("cold create throughput vs workers")
    plt.grid(True, alpha=0.3)
    plt.legend(fontsize=8)
    return _save(name)
