"""Resilience: circuit breakers, fallbacks, idempotent tasks, cluster-wide rate limits."""
