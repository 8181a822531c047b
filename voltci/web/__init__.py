"""`volt web`: server-rendered pages over the same Redis, a badge per repository, JSON under /api/,
and rq-dashboard under /rq — all read-only unless a `web_token` is configured.

    app.py        the app factory (create_app)
    guard.py      read-only unless the token is given (what is not known to read needs it); errors as
                  pages or JSON
    checks.py     what a request names, checked before anything is looked up
    context.py    the store and settings every request shares
    reads.py      what pages and API both read
    pages.py      /, /runners, /badge
    builds.py     a repository's page (trend, builds) and a build's page
    testpages.py  a test's history; a repository's flaky and slowest tests
    testsearch.py finding tests in a build: search, slowest
    charts.py     what the charts draw (static/charts.js draws it with Chartist)
    formatting.py times ("3 min ago"), durations ("1m 12s"), links to tests
    api.py        /api/…
    actions.py    cancel, rebuild
    hooks.py      a forge's push webhook: signed, about this repository, never replayed
    dashboard.py  rq-dashboard under /rq: its reads, its paths checked, its content policy
    server.py     serving it (`volt web`, `volt up --web`)
    templates/    the pages (Jinja); static/ the style sheet, scripts and Chartist
"""

from voltci.web.app import create_app
from voltci.web.dashboard import mount_rq_dashboard
from voltci.web.reads import PER_PAGE

__all__ = ["PER_PAGE", "create_app", "mount_rq_dashboard"]
