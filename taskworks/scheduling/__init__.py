"""Periodic tasks: Celery beat with a leader lock, so one schedule fires once."""
