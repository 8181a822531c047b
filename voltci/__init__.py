"""Volt CI: a self-hosted continuous-integration system coordinated through Redis and rq."""

__version__ = "0.1.0"
