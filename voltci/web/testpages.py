"""Pages about tests across builds: one test's history, and a repository's flaky and slowest tests
with their trends. All read the repository's test trail (the store's newest 100 builds)."""

from __future__ import annotations

import statistics
from typing import Any

import flask

from voltci import testhistory
from voltci.models import Build, Outcome
from voltci.store.trail import TRAIL_BUILDS
from voltci.testhistory import Point
from voltci.web import charts
from voltci.web.checks import branch_arg, repo_or_404
from voltci.web.context import store
from voltci.web.testsearch import slowest

bp = flask.Blueprint("testpages", __name__)

FLAKY_SHOWN = 50
SLOW_SHOWN = 25


def test_id_or_404(repo: str, test_id: str) -> str:
    if not testhistory.is_test_id(test_id):
        flask.abort(404, f"not a test id: {test_id[:200]!r}")
    return test_id


def history_or_404(repo: str, test_id: str) -> testhistory.TestHistory:
    repo_or_404(repo)
    test_id_or_404(repo, test_id)
    found = testhistory.read(store(), repo, test_id, branch_arg())
    if found is None:
        flask.abort(404, f"no test '{test_id}' in the last {TRAIL_BUILDS} builds of '{repo}'")
    return found


@bp.get("/repo/<repo>/test/<path:test_id>", merge_slashes=False)
def test_page(repo: str, test_id: str) -> str:
    history = history_or_404(repo, test_id)
    return flask.render_template("test.html", repo=repo, h=history, branches=store().history.branches(repo),
                                 chart=charts.test_durations(history.points), kept=TRAIL_BUILDS,
                                 median_s=history.median_s())


def _rows(repo: str, test_ids: list[str], builds: list[Build], durations: bool = True) -> dict[str, list[Point]]:
    """Each test's points, oldest first, over `builds` (newest first)."""
    rows = store().trail.rows(repo, test_ids, builds, durations)
    return {test_id: [Point(b, c) for b, c in zip(builds, cells, strict=True)][::-1] for test_id, cells in rows.items()}


@bp.get("/repo/<repo>/flaky")
def flaky_page(repo: str) -> str:
    repo_or_404(repo)
    branch = branch_arg()
    ranking = store().history.flaky_tests([repo], FLAKY_SHOWN)
    builds = store().trail.builds(repo, branch)
    rows = _rows(repo, [f.test for f in ranking], builds, durations=False)
    tests = [{**f.to_dict(), "points": rows.get(f.test, []),
              "recent": sum(1 for p in rows.get(f.test, []) if p.outcome is Outcome.FLAKY),
              "last": f.last_build.rsplit("-", 1)[-1]} for f in ranking]
    return flask.render_template("flaky.html", repo=repo, branch=branch, branches=store().history.branches(repo),
                                 tests=tests, builds=len(builds))


@bp.get("/repo/<repo>/slow")
def slow_page(repo: str) -> str:
    repo_or_404(repo)
    branch = branch_arg()
    builds = store().trail.builds(repo, branch)
    newest = next((b for b in builds if b.counts.total), None)
    table = store().trail.table(newest) if newest else None
    slow = slowest(table, SLOW_SHOWN) if table else []
    rows = _rows(repo, [f.test_id for f in slow], builds)
    tests: list[dict[str, Any]] = []
    for found in slow:
        points = rows.get(found.test_id, [])
        timed = [p.cell.ms / 1000 for p in points if p.outcome not in (None, Outcome.SKIPPED)]
        tests.append({"id": found.test_id, "cell": found.cell, "median_s": statistics.median(timed) if timed else None,
                      "series": [p.cell.ms / 1000 if p.outcome else None for p in points]})
    return flask.render_template("slow.html", repo=repo, branch=branch, branches=store().history.branches(repo),
                                 newest=newest, tests=tests, builds=len(builds),
                                 sparks=[t["series"] for t in tests])


