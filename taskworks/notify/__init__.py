"""Failure notifications: a notice, once per window per task and exception type, by email
and webhook, each attempt recorded in the ``notifications`` table."""
