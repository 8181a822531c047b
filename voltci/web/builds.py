"""A repository's page (its trend and its builds), its pull requests, and a build's page (while it runs,
how many failed so far and the first that did; what failed, since when, a search over all of its
tests, and the output — folded when there is nothing to find; below it, the slowest tests when some
took measurable time, then the others of a small build)."""

from __future__ import annotations

from typing import Any

import flask

from voltci import testhistory
from voltci.live import expected_tests
from voltci.models import Build, Outcome, Status
from voltci.web import charts
from voltci.web.checks import branch_arg, build_or_404, page_arg, repo_or_404
from voltci.web.context import store, volt
from voltci.web.reads import PER_PAGE, history_page
from voltci.web.testsearch import MAX_QUERY, build_table, search, slowest

bp = flask.Blueprint("builds", __name__)

TREND_BUILDS = 200  # the builds a repository's chart shows
ALL_TESTS_UP_TO = 200  # a build with at most this many tests lists them all
SLOWEST = 10
MEASURABLE_MS = 1  # a test that took less says nothing in the slowest tests (its time rounds to no millisecond)
FOUND_SHOWN = 100
STREAKS_FOR = 200  # failing tests whose history a build page looks up
PAGE_LOG_CHARS = 64 * 1024  # the page shows the end of the output; /api/builds/…/log has all of it
FOLDED_LINES = 15  # what a passing build's page shows of its output
FOLDED = (Status.PASSED, Status.CANCELLED, Status.SKIPPED)
PULLS_SHOWN = 100  # pull requests a repository's pull-requests page lists, the newest first
BUILDS_PER_PULL = 5  # builds shown of each


@bp.get("/repo/<repo>")
def repo_page(repo: str) -> str:
    repo_or_404(repo)
    branch = branch_arg()
    recent = store().history.recent_builds(repo, branch, TREND_BUILDS)
    data = history_page(repo) if branch is None else _branch_page(repo, branch, recent)
    busy = any(not b.status.is_final for b in data["builds"])
    return flask.render_template("repo.html", refresh=busy, branch=branch, branches=store().history.branches(repo),
                                 chart=charts.trend(recent), trend_limit=TREND_BUILDS, **data)


@bp.get("/repo/<repo>/pulls")
def pulls_page(repo: str) -> str:
    """A repository's pull requests, the newest first, each with its newest builds; an Approve button
    for those that wait, when the web token is set."""
    repo_or_404(repo)
    pulls = store().pulls.all(repo)[:PULLS_SHOWN]
    builds = {b.id: b for b in store().records.light([b for p in pulls for b in p.builds[:BUILDS_PER_PULL]])}
    rows = [(pull, [builds[b] for b in pull.builds[:BUILDS_PER_PULL] if b in builds]) for pull in pulls]
    entry = store().repos.known().get(repo, {})
    busy = any(not b.status.is_final for _, found in rows for b in found)
    return flask.render_template("pulls.html", repo=repo, rows=rows, refresh=busy, on=bool(entry.get("pull_requests")),
                                 can_act=bool(volt().settings.web_token), shown=PULLS_SHOWN)


def _branch_page(repo: str, branch: str, recent: list[Build]) -> dict[str, Any]:
    """A page of one branch's builds: those its chart shows."""
    page = page_arg()
    pages = max(1, -(-len(recent) // PER_PAGE))
    if page > pages:
        flask.abort(404, f"branch '{branch}' of '{repo}' has {pages} page(s) of builds, not {page}")
    return {"repo": repo, "page": page, "pages": pages, "total": len(recent),
            "builds": recent[(page - 1) * PER_PAGE:page * PER_PAGE]}


def query_arg() -> str:
    query = flask.request.args.get("q", "")
    if len(query) > MAX_QUERY or not query.isprintable():
        flask.abort(400, f"a search is at most {MAX_QUERY} printable characters")
    return query.strip()


@bp.get("/build/<repo>/<sha>")
def build_page(repo: str, sha: str) -> str:
    build = build_or_404(repo, sha)
    query = query_arg()
    listed = store().records.listed_tests(build.id) if build.status.is_final else []
    bad = [t for t in listed if t.outcome in (Outcome.FAILED, Outcome.ERROR)]
    flaky = [t for t in listed if t.outcome is Outcome.FLAKY and not t.subtest_of]
    table = build_table(store(), build)
    found, matched = search(table, query, FOUND_SHOWN) if query else ([], 0)
    rest = []
    if len(table) <= ALL_TESTS_UP_TO:  # a small build lists everything (with skip reasons)
        rest = [t for t in store().records.get_tests(build.id) if t.outcome not in (Outcome.FAILED, Outcome.ERROR)]
    output = store().logs.read(build.id)
    legs = store().records.get_legs(build.id)
    folded, lines = 0, output.count("\n")
    if build.status in FOLDED and lines > FOLDED_LINES:
        folded, output = FOLDED_LINES, "\n".join(output.rstrip("\n").split("\n")[-FOLDED_LINES:])
    return flask.render_template(
        "build.html", build=build, output=output[-PAGE_LOG_CHARS:], output_cut=len(output) > PAGE_LOG_CHARS,
        folded=folded, output_lines=lines, bad=bad, flaky=flaky,
        streaks=testhistory.streaks(store(), build, [t.id for t in bad[:STREAKS_FOR]]),
        slow=[f for f in slowest(table, SLOWEST) if f.cell.ms >= MEASURABLE_MS] if len(table) > 1 else [],
        test_count=len(table), query=query,
        max_query=MAX_QUERY, found=found, matched=matched, rest=rest,
        attempts=store().records.get_attempts(build.id), legs=legs, failing_so_far=failing_so_far(build, legs),
        refresh=not build.status.is_final,
        expected=expected_tests(store(), build.repo) if build.status is Status.RUNNING else 0,
        can_act=bool(volt().settings.web_token), runners={r.name: r for r in store().runners.table()})


def failing_so_far(build: Build, legs: list[Build]) -> int:
    """How many tests a running build saw fail so far (a matrix build: its legs together); at least one
    once its first failure is known."""
    failing = sum(leg.failing for leg in legs) if legs else build.failing
    return max(failing, 1) if build.first_failure else failing
