"""Side-by-side benchmarks: taskworks, the same Celery app without taskworks, raw Celery,
Dramatiq, RQ and a bare Redis loop, all against one embedded Valkey in one run.

``python -m bench`` (``make bench``) runs every registered scenario and writes
``bench/results/latest.md`` and ``latest.png``. A scenario is one module under
``bench/scenarios/`` registered in ``bench/scenarios/__init__.py``.
"""
