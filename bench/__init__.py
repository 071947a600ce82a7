"""The benchmarks (`make bench`): each prints figures and writes them for docs/benchmarks.md."""
