"""The REST API (FastAPI): ``create_app(tw)``; ``serve(tw, host, port)`` runs it."""

from taskworks.api.app import create_app
from taskworks.api.server import check_bind, make_server, serve

__all__ = ["check_bind", "create_app", "make_server", "serve"]
