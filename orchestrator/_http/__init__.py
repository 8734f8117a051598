"""The HTTP API, the dashboard and /healthz (DESIGN.md, "Operations")."""

from .app import create_app as create_app
from .server import parse_bind as parse_bind
from .server import serve_http as serve_http
