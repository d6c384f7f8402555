"""One router per resource. A later resource (datasets, jobs) is one more module here
and one line in ``ROUTERS`` (taskworks/api/app.py)."""
