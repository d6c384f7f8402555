#!/usr/bin/env python3
"""Container health checks for deploy/docker-compose.yml: exit 0 when healthy, 1 when not.

    healthcheck.py api [URL]     GET URL (default http://127.0.0.1:8765/api/health) is 200:
                                 the API answers and reaches the broker and the store
    healthcheck.py worker NODE   the Celery worker NODE answers a ping over the broker
                                 (``%h`` in NODE is this host's name, as in --hostname)
    healthcheck.py beat          some beat process holds the leader lease in Redis

Settings come from the same TASKWORKS_* variables (and TASKWORKS_APP) as the process
checked. The image installs this file as ``/usr/local/bin/taskworks-healthcheck``.
"""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request


def api(url: str = "http://127.0.0.1:8765/api/health") -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (fixed scheme)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):  # a 503 (degraded) is an HTTPError
        return False


def worker(node: str) -> bool:
    from taskworks.cli.loader import load

    name = node.replace("%h", socket.gethostname())
    replies = load().app.control.ping(destination=[name], timeout=5) or []
    return any(name in reply for reply in replies)


def beat() -> bool:
    import redis

    from taskworks import keys
    from taskworks.cli.loader import load

    app = load().app
    client = redis.Redis.from_url(app.conf.broker_url, socket_timeout=5)
    try:
        return bool(client.exists(keys.beat_leader(app.main or "default")))
    except redis.RedisError:
        return False
    finally:
        client.close()


def main(argv: list[str]) -> int:
    if argv[:1] == ["api"] and len(argv) <= 2:
        healthy = api(*argv[1:])
    elif argv[:1] == ["worker"] and len(argv) == 2:
        healthy = worker(argv[1])
    elif argv == ["beat"]:
        healthy = beat()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
