"""What a build does inside its checked-out tree: read the commit's .volt.toml, take its virtual
environment, run its setup steps, run its tests (unittest discovery, or its own command and the JUnit
file that command writes), and run failed tests again on their own to tell flaky ones.

Every step runs in the build's sandbox (sandbox.py), under its limits, in a process group of its own
and under one time budget, its output appended to the build's log; every way a step can go wrong
ends the build with a status and a reason.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Callable

from voltci.config import Settings
from voltci.models import Counts, Outcome, RunOutcome, Share, Status, TestResult
from voltci.runner import junitxml, project, untrusted
from voltci.runner.buildplan import plan_build
from voltci.runner.detect import DetectError
from voltci.runner.environments import EnvironmentUnavailable, environment
from voltci.runner.limits import Limits
from voltci.runner.sandbox import Sandbox, SandboxUnavailable, tmp_seen
from voltci.runner.suites import Selection, Suite
from voltci.runner.testrun import (
    OUTPUT_FILE,
    Budget,
    ProcessEnd,
    apply_stop,
    parse_results,
    read_tail,
    run_process,
    run_tests,
    strip_workspace,
)

MAX_RETRIED_TESTS = 100  # more failures than this is a broken build, not flaky tests
_REPEAT_SUFFIX = re.compile(r" \[(\d+|teardown)\]$")  # a repeated id, or pytest's teardown error

StopCheck = Callable[[], str | None]


# Splits the build if it is large enough, dispatches the other shards, and returns this run's share.
# Called first with None (split from the repository's history alone, before setup), then, if that did
# not split it, with a way to list the test ids.
Splitter = Callable[[Callable[[], list[str]] | None], Share | None]


def run_steps(tree: Path, scratch: Path, repo: str, settings: Settings, should_stop: StopCheck,
              run_id: str, split: Splitter | None = None, only: Share | None = None) -> RunOutcome:
    log_path = scratch / OUTPUT_FILE
    try:
        config = project.load(tree)
        plan = plan_build(config, tree, tmp_seen(scratch, settings.sandbox))
    except (project.ProjectConfigError, DetectError) as exc:
        _say(log_path, f"[volt: {exc}]")
        return _error(str(exc))
    for note in plan.notes:
        _say(log_path, f"[volt: {note}]")
    budget = Budget(config.timeout or settings.build_timeout)
    if split is not None and only is None and plan.suite is not None:
        only = split(None)  # from the repository's history: the other shards start while this one sets up
    try:
        with environment(settings.workspace_dir, repo, tree, config.python, with_pip=bool(plan.setup),
                         wait_s=budget.timeout_s) as env:
            _say(log_path, f"[volt: {'reusing' if env.reused else 'made'} the environment {env.path}]")
            box = Sandbox.for_build(tree, scratch, env.python, build_limits(settings, config, log_path),
                                    enabled=settings.sandbox, venv=env.path, pass_env=settings.pass_env,
                                    env=plan.env)
            _say(log_path, f"[volt: {box.with_network(config.network).describe()}]")
            failed = _set_up(plan.setup, tree, log_path, budget, should_stop, run_id, box, settings)
            if failed is not None:
                return failed
            box = box.with_network(config.network)
            if plan.suite is None:
                return _run_command(config, tree, log_path, budget, should_stop, run_id, box, settings)
            suite, python = plan.suite, str(env.python)
            if split is not None and only is None:
                only = split(lambda: _list_tests(tree, scratch, suite, python, budget, should_stop, run_id, box))
            _say(log_path, f"$ {suite.describe()}")
            outcome = run_tests(tree, box, suite, budget, log_path, python=python,
                                tail_lines=settings.log_tail_lines, should_stop=should_stop, run_id=run_id,
                                selection=_share(only, box, log_path))
            if only is not None and outcome.status is Status.ERROR and outcome.reason == "no tests found":
                outcome.status, outcome.reason = Status.PASSED, ""  # a shard whose tests were all removed
            retries = config.retries if config.retries is not None else settings.retries
            if outcome.status is Status.FAILED and retries:
                outcome = _retry_failed(outcome, tree, scratch, suite, python, budget, should_stop, run_id, box,
                                        retries)
            return outcome
    except (EnvironmentUnavailable, SandboxUnavailable) as exc:
        _say(log_path, f"[volt: {exc}]")
        return _error(str(exc))


def _set_up(setup: list[list[str]], tree: Path, log_path: Path, budget: Budget, should_stop: StopCheck,
            run_id: str, box: Sandbox, settings: Settings) -> RunOutcome | None:
    """Run the setup steps in order; the build's outcome when one fails or the build is stopped."""
    for number, step in enumerate(setup, 1):
        _say(log_path, f"$ {shlex.join(step)}")
        end = run_process(step, tree, log_path, budget, should_stop, run_id, box)
        failed = _setup_failure(end, number, step)
        if end.stopped or failed:
            tail = read_tail(log_path, settings.log_tail_lines)
            return apply_stop(RunOutcome(Status.ERROR, [], Counts(), failed, tail), end, budget)
    return None


def _share(only: Share | None, box: Sandbox, log_path: Path) -> Selection:
    """What this run of a split build selects: its share, written where its tests can read it."""
    if only is None:
        return Selection()
    share_file = box.out / "shard-tests.txt"
    share_file.write_text("\n".join(only.ids) + "\n", encoding="utf-8")
    _say(log_path, f"[volt: this shard runs every test but the other shards' {len(only.ids)}]"
         if only.exclude else f"[volt: this shard runs {len(only.ids)} test(s)]")
    return Selection(others=share_file) if only.exclude else Selection(only=share_file)


def build_limits(settings: Settings, config: project.ProjectConfig, log_path: Path) -> Limits:
    """The build's limits: the repository's own where it sets them, never above the runner's."""
    runner = Limits.of_runner(settings.build_memory, settings.build_processes)
    memory = min(config.memory_bytes or runner.memory_bytes, runner.memory_bytes)
    processes = min(config.processes or runner.processes, runner.processes)
    if (config.memory_bytes or 0) > runner.memory_bytes or (config.processes or 0) > runner.processes:
        _say(log_path, f"[volt: {project.FILE_NAME} asks for more than this runner allows; the build gets "
                       f"{Limits(memory, processes).describe()}]")
    return Limits(memory, processes)


def _list_tests(tree: Path, scratch: Path, plan: Suite, python: str, budget: Budget, should_stop: StopCheck,
                run_id: str, box: Sandbox) -> list[str]:
    """The ids the suite collects, without running them (empty when that fails: the run says why)."""
    listing = box.out / "test-ids.jsonl"
    end = run_process(plan.command(python, listing, Selection(list_only=True)), tree, scratch / "listing.log", budget,
                      should_stop, run_id, box)
    if end.returncode != 0:
        return []
    ids = []
    try:
        lines = untrusted.read_text(listing, box.out).splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            ids.append(json.loads(line)["id"])
        except (ValueError, KeyError, TypeError):
            return []
    return ids


def _setup_failure(end: ProcessEnd, number: int, step: list[str]) -> str:
    if end.not_started:
        return f"setup step {number} could not start: {end.not_started}"
    if not end.stopped and end.returncode != 0:
        return f"setup step {number} failed with exit status {end.returncode}: {shlex.join(step)}"
    return ""


def _run_command(config: project.ProjectConfig, tree: Path, log_path: Path, budget: Budget, should_stop: StopCheck,
                 run_id: str, box: Sandbox, settings: Settings) -> RunOutcome:
    """The project's own test command; per-test results from the JUnit file it writes."""
    assert config.command is not None and config.junit is not None
    junit = tree / config.junit
    junit.unlink(missing_ok=True)  # a report committed to the repository is not this run's
    _say(log_path, f"$ {shlex.join(config.command)}")
    end = run_process(config.command, tree, log_path, budget, should_stop, run_id, box)
    tail = read_tail(log_path, settings.log_tail_lines)
    if end.not_started:
        return _error(f"the test command could not start: {end.not_started}", tail)
    try:
        tests = junitxml.read(junit, tree)
    except junitxml.JUnitError as exc:
        how = "was stopped" if end.stopped else f"exited with status {end.returncode}"
        return apply_stop(_error(f"the test command {how} and left no usable results: {exc}", tail), end, budget)
    counts = Counts.of(tests)
    if not tests:
        outcome = _error(f"no tests found: {config.junit} lists none", tail)
    elif counts.failed or counts.errors:
        outcome = RunOutcome(Status.FAILED, tests, counts, "", tail)
    elif end.returncode != 0 and not end.stopped:
        outcome = RunOutcome(Status.ERROR, tests, counts,
                             f"the test command exited with status {end.returncode}, but {config.junit} reports "
                             "no failure", tail)
    else:
        outcome = RunOutcome(Status.PASSED, tests, counts, "", tail)
    strip_workspace(outcome, tree)
    return apply_stop(outcome, end, budget)


def _retry_failed(outcome: RunOutcome, tree: Path, scratch: Path, plan: Suite, python: str, budget: Budget,
                  should_stop: StopCheck, run_id: str, box: Sandbox, retries: int) -> RunOutcome:
    """Run each failed test again on its own, up to `retries` times; one that passes is `flaky`."""
    failing = sorted({_REPEAT_SUFFIX.sub("", t.subtest_of or t.id) for t in outcome.tests
                      if t.outcome in (Outcome.FAILED, Outcome.ERROR)})
    if len(failing) > MAX_RETRIED_TESTS:
        return outcome
    log_path = scratch / OUTPUT_FILE
    remaining, flaky = set(failing), {}
    for attempt in range(1, retries + 1):
        results_path = box.out / f"retry-{attempt}.jsonl"
        _say(log_path, f"[volt: running {len(remaining)} failed test(s) again on their own (retry {attempt})]")
        again = Selection(ids=tuple(sorted(remaining)), ids_file=box.out / f"retry-{attempt}-ids.txt")
        end = run_process(plan.command(python, results_path, again), tree, log_path, budget, should_stop, run_id, box)
        if end.stopped:
            return apply_stop(outcome, end, budget)
        rerun = parse_results(results_path, end.returncode).tests
        still_failing = {_REPEAT_SUFFIX.sub("", t.subtest_of or t.id) for t in rerun
                         if t.outcome in (Outcome.FAILED, Outcome.ERROR)}
        passed = {t.id for t in rerun if not t.subtest_of and t.outcome is Outcome.PASSED} & remaining - still_failing
        flaky.update(dict.fromkeys(passed, attempt))
        remaining -= passed
        if not remaining:
            break
    for test in outcome.tests:
        parent = _REPEAT_SUFFIX.sub("", test.subtest_of or test.id)
        if parent in flaky and test.outcome in (Outcome.FAILED, Outcome.ERROR):
            test.outcome = Outcome.FLAKY
            test.message = f"passed when run again on its own (retry {flaky[parent]}); it had failed with:\n" \
                           f"{test.message}"
    outcome.counts = Counts.of(outcome.tests)
    if outcome.counts.failed == 0 and outcome.counts.errors == 0:
        outcome.status, outcome.reason = Status.PASSED, ""
    return outcome


def flaky_tests(tests: list[TestResult]) -> list[str]:
    return [t.id for t in tests if t.outcome is Outcome.FLAKY and not t.subtest_of]


def _error(reason: str, tail: str = "") -> RunOutcome:
    return RunOutcome(Status.ERROR, [], Counts(), reason, tail)


def _say(log_path: Path, line: str) -> None:
    """A line of Volt's own in the build's log, between the steps' output."""
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(line + "\n")
