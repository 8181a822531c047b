"""The app factory: one Flask app with Volt's pages, its JSON API, its actions and rq-dashboard.

The routes live in blueprints, one module each (pages, builds, testpages, api, actions, hooks,
forgehooks), the templates in templates/ and the style sheet and scripts in static/, all shipped with
the package. Templates are Jinja's with autoescaping on (every name ends in .html or .svg), so test
names, messages and logs are shown, never run.
"""

from __future__ import annotations

import flask

from voltci import metrics
from voltci.config import Settings
from voltci.connection import connect
from voltci.models import Outcome, Status
from voltci.store import Store
from voltci.web import actions, api, builds, forgehooks, formatting, guard, hooks, pages, testpages
from voltci.web.context import Volt
from voltci.web.dashboard import mount_rq_dashboard

REFRESH_S = 3


def create_app(settings: Settings) -> flask.Flask:
    app = flask.Flask("voltci.web")
    url = settings.effective_redis_url
    app.extensions["volt"] = Volt(Store(connect(url, ping=False), settings), settings, url)
    mount_rq_dashboard(app, url)
    guard.install(app)
    for blueprint in (pages.bp, builds.bp, testpages.bp, api.bp, actions.bp, hooks.bp, forgehooks.bp):
        app.register_blueprint(blueprint)
    formatting.install(app.jinja_env)
    app.jinja_env.globals.update(REFRESH_S=REFRESH_S, Status=Status, Outcome=Outcome)
    metrics.register(app, app.extensions["volt"].store)
    return app
