"""Fleet maintenance on beat: health sweep, warm pools, quotas, status log, orphan GC, rate limits."""
