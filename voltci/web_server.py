"""Kept for users who import it: serving the web app moved to voltci.web.server, which Volt's own code
imports; this module only passes it on."""

from voltci.web.server import serve, start, url_of

__all__ = ["serve", "start", "url_of"]
