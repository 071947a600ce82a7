"""Observability: metrics, tracing, log context, Flower authentication."""
