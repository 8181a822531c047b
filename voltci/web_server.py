"""Serving the web app: moved to voltci/web/server.py; this name stays for those who import it."""

from voltci.web.server import serve, start, url_of

__all__ = ["serve", "start", "url_of"]
