"""rq-dashboard mounted under /rq of Volt's app."""

from __future__ import annotations

import flask
import rq_dashboard
import rq_dashboard.web
from rq_dashboard.web import setup_rq_connection

from voltci import jobqueue


def mount_rq_dashboard(app: flask.Flask, url: str) -> None:
    """rq-dashboard under /rq, reading jobs as Volt writes them (JSON), its delete buttons off.

    rq-dashboard keeps its serializer in a module global (its CLI's `--json` sets the same)."""
    rq_dashboard.web.config.serializer = jobqueue.JOB_SERIALIZER
    app.config.update(RQ_DASHBOARD_REDIS_URL=url, RQ_DASHBOARD_DISABLE_DELETE=True)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix="/rq")
    setup_rq_connection(app)
