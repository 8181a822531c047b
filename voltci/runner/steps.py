"""What a build does inside its checked-out tree, phase by phase (see BuildSteps): read the commit's
.volt.toml and detect what it leaves out, take the virtual environment and run the setup steps, list
the tests (for a split), run them — unittest discovery, pytest, or the project's own command and the
JUnit file it writes — and run failed tests again on their own to tell flaky ones.

Every step runs in the build's sandbox (sandbox.py), under its limits, in a process group of its own
and under one time budget, its output appended to the build's log; every way a step can go wrong
ends the build with a status and a reason.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from types import TracebackType

from voltci.config import Settings
from voltci.models import Counts, Leg, Outcome, RunOutcome, Share, Status, plain_test_id
from voltci.runner import installs, junitxml, prepass, project, untrusted
from voltci.runner.buildplan import BuildPlan, Run, plan_build, with_environment
from voltci.runner.detect import DetectError
from voltci.runner.environments import Environment, EnvironmentUnavailable, environment
from voltci.runner.limits import Limits
from voltci.runner.procs import Budget, ProcessEnd, run_process
from voltci.runner.project_install import ProjectInstaller
from voltci.runner.sandbox import EnvMount, Sandbox, SandboxUnavailable, overlays_work, tmp_seen
from voltci.runner.scopes import Scope
from voltci.runner.sequence import Results, working_dir
from voltci.runner.suites import Selection, Suite
from voltci.runner.testrun import (
    OUTPUT_FILE,
    PREPASS_FILE,
    apply_stop,
    parse_results,
    read_listing,
    read_tail,
    run_tests,
    strip_workspace,
)

STOPPED = (Status.TIMEOUT, Status.CANCELLED)

MAX_RETRIED_TESTS = 100  # more failures than this is a broken build, not flaky tests

StopCheck = Callable[[], str | None]


class BuildSteps:
    """A build's steps in its tree. Lifecycle, each phase returning the build's outcome when the build
    ends there (a wrong .volt.toml, a failed setup step, a stop) and None when it goes on:

        with BuildSteps(tree, scratch, repo, settings, should_stop, run_id) as steps:
            steps.prepare()          # .volt.toml, detection: what to install and how to run the tests
            steps.set_up()           # the environment (held until the block ends), the sandbox, setup
            steps.list_tests()       # only for a split: the ids the suite collects
            steps.test(share)        # the suite (this run's share of it), failed tests again

    `splittable` says whether the suite can be split at all (a project's own command cannot)."""

    def __init__(self, tree: Path, scratch: Path, repo: str, settings: Settings, should_stop: StopCheck,
                 run_id: str, leg: Leg | None = None, scope: Scope | None = None):
        self.tree, self.scratch, self.repo, self.settings = tree, scratch, repo, settings
        self.should_stop, self.run_id = should_stop, run_id
        self.leg = leg  # a matrix leg's run: its interpreter and variables, instead of the matrix
        self.scope = scope  # what it may write of what builds reuse (scopes.py); None: the protected scope
        self.log_path = scratch / OUTPUT_FILE
        self._held = ExitStack()
        self.config = project.ProjectConfig()
        self.plan = BuildPlan(setup=[], suite=None)
        self.budget = Budget(settings.build_timeout)
        self.env: Environment | None = None
        self.box: Sandbox | None = None
        self.prepass: prepass.Choice | None = None  # the likely failures to run first (BuildRun chooses them)

    def __enter__(self) -> BuildSteps:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._held.close()

    @property
    def splittable(self) -> bool:
        return self.plan.suite is not None and not self.plan.runs

    def prepare(self) -> RunOutcome | None:
        """Read the commit's .volt.toml and detect what it leaves out; no process of the build runs."""
        leg = self.leg
        try:
            self.config = project.load(self.tree)
            if leg is not None:
                self.config = replace(self.config, python=leg.python, matrix=())
                self.say(f"[volt: matrix leg {leg.name}: python {leg.python}"
                         + "".join(f", {name}={value}" for name, value in leg.env.items()) + "]")
            self.plan = plan_build(self.config, self.tree, tmp_seen(self.scratch, self.settings.sandbox))
        except (project.ProjectConfigError, DetectError) as exc:
            return self._ends(str(exc))
        if leg is not None:
            self.plan = replace(self.plan, env={**self.plan.env, **leg.env})
        for note in self.plan.notes:
            self.say(f"[volt: {note}]")
        self.budget = Budget(self.config.timeout or self.settings.build_timeout)
        return None

    def set_up(self) -> RunOutcome | None:
        """Take the environment (held until the steps end), make the sandbox, run the setup steps."""
        settings, config = self.settings, self.config
        if self.scope is not None:
            self.say(f"[volt: trust scope: {self.scope.describe()}]")
        try:
            self.env = env = self._held.enter_context(environment(
                settings.workspace_dir, self.repo, self.tree, config.python, with_pip=bool(self.plan.setup),
                wait_s=self.budget.timeout_s, pythons=settings.pythons, variables=self.leg.env if self.leg else None,
                scope=self.scope, overlay=settings.sandbox and overlays_work()))
            self.say(f"[volt: {self._describe(env)}]")
            version = config.python or f"{sys.version_info.major}.{sys.version_info.minor}"
            self.plan = with_environment(self.plan, env.path, version)
            box = Sandbox.for_build(self.tree, self.scratch, env.base, self._limits(), enabled=settings.sandbox,
                                    venv=env.path, pass_env=settings.pass_env, env=self.plan.env,
                                    network=settings.build_network, allow=settings.build_network_allow,
                                    env_mount=EnvMount(env.path, env.lower, env.upper, env.work))
        except (EnvironmentUnavailable, SandboxUnavailable, untrusted.RefusedVariable) as exc:
            return self._ends(str(exc))
        setup_network = config.setup_network and bool(self.plan.setup)
        self.say(f"[volt: {box.with_network(config.network).describe(setup_network)}]")
        refused = box.with_network(True).refusal() if setup_network or config.network else ""
        if refused:
            asks = "its setup steps" if setup_network else "its tests"
            return self._ends(f"the build asks for the network ({asks}), and {refused}")
        plan = self.plan
        skipped = plan.installs if env.reused and installs.already_installed(env.home, plan.installs_key) else 0
        if skipped:
            self.say(f"[volt: the test dependencies are installed in this environment already (same steps, same "
                     f"files): {skipped} setup step(s) skipped]")
        elif plan.installs:
            installs.forget(env.home)
        setup_box = box.with_network(setup_network)
        for number, step in enumerate(plan.setup, 1):
            if number <= skipped:
                continue
            if plan.project is not None and number == plan.project.step + 1:
                installer = ProjectInstaller(env, setup_box.out, self._runner(setup_box), self.say)
                ended = installer.install(plan.project, step, resolve=number > skipped + 1)
                end, step = ended.end, ended.command
            else:
                self.say(f"$ {shlex.join(step)}")
                end = self._runner(setup_box)(step)
            failed = _setup_failure(end, number, step)
            if end.stopped or failed:
                tail = read_tail(self.log_path, settings.log_tail_lines)
                return apply_stop(RunOutcome(Status.ERROR, [], Counts(), failed, tail), end, self.budget)
            if number == plan.installs and not skipped:
                installs.remember(env.home, plan.installs_key)
        self.box = box.with_network(config.network).for_tests()
        return None

    def _describe(self, env: Environment) -> str:
        how = "reusing" if env.reused else "made"
        if env.upper is not None:
            return f"the environment {env.path}, seen through a layer of this scope's own ({env.home}): read-only below"
        return f"{how} the environment {env.path}"

    def _runner(self, box: Sandbox) -> Callable[[list[str]], ProcessEnd]:
        """Runs a setup step's command in `box`: in the tree, under the build's budget, into its log."""
        return lambda argv: run_process(argv, self.tree, self.log_path, self.budget, self.should_stop, self.run_id,
                                        box)

    def list_tests(self) -> list[str]:
        """The ids the suite collects, without running them (empty when that fails: the run says why)."""
        box, suite, python = self._ready()
        listing = box.out / "test-ids.jsonl"
        end = run_process(suite.command(python, listing, Selection(list_only=True)), self.tree,
                          self.scratch / "listing.log", self.budget, self.should_stop, self.run_id, box)
        if end.returncode != 0:
            return []
        return read_listing(listing, box.out)

    def test(self, share: Share | None = None) -> RunOutcome:
        """Run the tests (only `share` of them, for a split build), then the failed ones again."""
        if self.box is None or self.env is None:
            raise RuntimeError("set_up() first")
        if self.plan.suite is None:
            return self._run_command()
        if self.plan.runs:
            return self._run_commands()
        box, suite, python = self._ready()
        early, stopped = self._prepass(suite, self.tree)
        if stopped is not None:
            return stopped
        self.say(f"$ {suite.describe()}")
        outcome = run_tests(self.tree, box, suite, self.budget, self.log_path, python=python,
                            tail_lines=self.settings.log_tail_lines, should_stop=self.should_stop,
                            run_id=self.run_id, selection=self._share(share))
        if share is not None and outcome.status is Status.ERROR and outcome.reason == "no tests found":
            outcome.status, outcome.reason = Status.PASSED, ""  # a shard whose tests were all removed
        retries = self.config.retries if self.config.retries is not None else self.settings.retries
        if outcome.status is Status.FAILED and retries:
            outcome = self._retry_failed(outcome, retries)
        return self._order_dependent(outcome, early)

    def _prepass(self, suite: Suite, cwd: Path) -> tuple[list[tuple[str, str]], RunOutcome | None]:
        """Run the likely failures first (prepass.py), in the tests' sandbox, under the build's budget: the
        tests that failed there (id, message), or the build's outcome when it was stopped meanwhile."""
        choice, self.prepass = self.prepass, None  # once per build
        if choice is None:
            return [], None
        prepass.describe(choice, self.say)
        if not choice.pick:
            return [], None
        box, _, python = self._ready()
        results = box.out / PREPASS_FILE
        entries = tuple(choice.pick.entries)
        chosen = Selection(ids=entries, ids_file=box.inbox_file("prepass-ids.txt"))
        started = time.monotonic()
        deadline = started + prepass.hard_limit_s(choice.pick)

        def stop() -> str | None:  # the build's own reasons first; then the pre-pass's bound
            return self.should_stop() or (prepass.CUT if time.monotonic() > deadline else None)
        end = run_process(suite.command(python, results, chosen), cwd, self.log_path, self.budget, stop,
                          self.run_id, box)
        if end.stopped == prepass.CUT:
            self.say(f"[volt: the pre-pass took longer than its bound of {prepass.hard_limit_s(choice.pick):.1f} s "
                     "and was stopped; what it ran so far counts]")
        elif end.stopped:
            return [], apply_stop(RunOutcome(Status.PASSED, [], Counts()), end, self.budget)
        ran = parse_results(results, end.returncode).tests
        failed = [(test.id, test.message) for test in ran if test.outcome in (Outcome.FAILED, Outcome.ERROR)]
        took = time.monotonic() - started
        if failed:
            named = ", ".join(test_id for test_id, _ in failed[:5]) + (f" and {len(failed) - 5} more"
                                                                      if len(failed) > 5 else "")
            self.say(f"[volt: pre-pass: {len(failed)} of {len(ran)} failed in {took:.1f} s: {named}; the whole suite "
                     "runs now, in its own order, and decides the build]")
        else:
            self.say(f"[volt: pre-pass: {len(ran)} test(s) passed in {took:.1f} s; the whole suite runs now]")
        return failed, None

    def _order_dependent(self, outcome: RunOutcome, early: list[tuple[str, str]]) -> RunOutcome:
        """The suite's outcome, its tests that failed only in the pre-pass named (prepass.order_dependent)."""
        if not early:
            return outcome
        found = prepass.order_dependent(outcome, early)
        if found:
            outcome.order_dependent = found[:prepass.ORDER_DEPENDENT_MAX]
            more = f" and {len(found) - 5} more" if len(found) > 5 else ""
            self.say(f"[volt: order-dependent: {', '.join(found[:5])}{more} failed in the pre-pass and passed in the "
                     "suite's own order; the suite's outcome stands]")
        return outcome

    def say(self, line: str) -> None:
        """A line of Volt's own in the build's log, between the steps' output."""
        _say(self.log_path, line)

    def _ready(self) -> tuple[Sandbox, Suite, str]:
        if self.box is None or self.env is None or self.plan.suite is None:
            raise RuntimeError("set_up() first, for a suite Volt runs")
        return self.box, self.plan.suite, str(self.env.python)

    def _ends(self, reason: str) -> RunOutcome:
        self.say(f"[volt: {reason}]")
        return _error(reason)

    def _limits(self) -> Limits:
        """The build's limits: the repository's own where it sets them, never above the runner's."""
        runner = Limits.of_runner(self.settings.build_memory, self.settings.build_processes)
        config = self.config
        memory = min(config.memory_bytes or runner.memory_bytes, runner.memory_bytes)
        processes = min(config.processes or runner.processes, runner.processes)
        if (config.memory_bytes or 0) > runner.memory_bytes or (config.processes or 0) > runner.processes:
            self.say(f"[volt: {project.FILE_NAME} asks for more than this runner allows; the build gets "
                     f"{Limits(memory, processes).describe()}]")
        return Limits(memory, processes)

    def _share(self, share: Share | None) -> Selection:
        """What this run of a split build selects: its share, written where its tests can read it."""
        if share is None:
            return Selection()
        box = self._ready()[0]
        share_file = box.inbox_file("shard-tests.txt")
        share_file.write_text("\n".join(share.ids) + "\n", encoding="utf-8")
        self.say(f"[volt: this shard runs every test but the other shards' {len(share.ids)}]"
                 if share.exclude else f"[volt: this shard runs {len(share.ids)} test(s)]")
        return Selection(others=share_file) if share.exclude else Selection(only=share_file)

    def _run_command(self) -> RunOutcome:
        """The project's own test command; per-test results from the JUnit file it writes."""
        config, tree, budget = self.config, self.tree, self.budget
        assert config.command is not None and config.junit is not None and self.box is not None
        junit = tree / config.junit
        try:
            untrusted.remove(junit, tree)  # a report committed to the repository is not this run's
        except OSError as exc:
            return self._ends(f"{project.FILE_NAME}: 'tests.junit' = {config.junit!r} cannot be used: "
                              f"{exc.strerror or exc}")
        self.say(f"$ {shlex.join(config.command)}")
        end = run_process(config.command, tree, self.log_path, budget, self.should_stop, self.run_id, self.box)
        tail = read_tail(self.log_path, self.settings.log_tail_lines)
        if end.not_started:
            return _error(f"the test command could not start: {end.not_started}", tail)
        try:
            found = junitxml.read(junit, tree)
        except junitxml.JUnitError as exc:
            how = "was stopped" if end.stopped else f"exited with status {end.returncode}"
            return apply_stop(_error(f"the test command {how} and left no usable results: {exc}", tail), end, budget)
        tests, counts = found.tests, found.counts
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
        outcome.cut = found.cut
        strip_workspace(outcome, tree)
        return apply_stop(outcome, end, budget)

    def _run_commands(self) -> RunOutcome:
        """Every command of the maintainers' test environment in its place, as tox runs them: each test
        run's tests are the build's (its failed tests run again), each other command a step in the tests'
        sandbox. A command that fails stops the ones after it, unless tox's `-` before it or the
        environment's ignore_errors says to go on; a step's failure under `-` counts for nothing."""
        box, _, python = self._ready()
        runs, results = self.plan.runs, Results(len(self.plan.runs))
        early, stopped = self._commands_prepass(runs)
        if stopped is not None:
            return stopped
        retries = self.config.retries if self.config.retries is not None else self.settings.retries
        tail = self.settings.log_tail_lines
        for number, run in enumerate(runs, 1):
            label = results.label(number, run.argv)
            try:
                cwd = working_dir(run.cwd, self.tree, self.scratch / "tmp")
            except OSError as exc:
                reason = f"{label} cannot run in {run.cwd}: {exc.strerror or exc}"
                self.say(f"[volt: {reason}]")
                results.step_failed(number, run.argv, f"cannot run in {run.cwd}: {exc.strerror or exc}", Status.ERROR)
                break
            where = f", in {run.cwd}" if run.cwd != "." else ""
            failed = self._step(number, run, cwd, where, results) if run.suite is None else \
                self._tests(number, run, cwd, where, results, python, retries)
            if results.status in STOPPED:
                break
            if not failed or number == len(runs):
                continue
            if run.ignore_exit:
                self.say(f"[volt: tox ignores the exit status of {label} (`-`): the next command runs]")
            elif self.plan.keep_going:
                self.say(f"[volt: {label} failed; ignore_errors: the next command runs]")
            else:
                self.say(f"[volt: {label} failed: the {len(runs) - number} command(s) after it do not run, "
                         "as tox stops there]")
                break
        outcome = results.outcome(read_tail(self.log_path, tail))
        strip_workspace(outcome, self.tree)
        return self._order_dependent(outcome, early)

    def _commands_prepass(self, runs: tuple[Run, ...]) -> tuple[list[tuple[str, str]], RunOutcome | None]:
        """The pre-pass of a build of several commands: the likely failures, run as its first test run
        runs its tests (where the setup commands before it have not run yet, it is left out)."""
        first = next((number for number, run in enumerate(runs) if run.suite is not None), None)
        if first is None or self.prepass is None:
            return [], None
        if first > 0:
            self.say(f"[volt: no pre-pass: the first test run is command {first + 1}, after commands it may need]")
            self.prepass = None
            return [], None
        run = runs[first]
        assert run.suite is not None
        try:
            cwd = working_dir(run.cwd, self.tree, self.scratch / "tmp")
        except OSError:
            self.prepass = None
            return [], None  # said when the command itself runs
        return self._prepass(run.suite, cwd)

    def _step(self, number: int, run: Run, cwd: Path, where: str, results: Results) -> bool:
        """A command that is no test run, in the tests' sandbox; whether it failed."""
        assert self.box is not None
        self.say(f"[volt: {results.label(number, run.argv)}: a step{where}]")
        self.say(f"$ {shlex.join(run.argv)}")
        end = run_process(run.argv, cwd, self.log_path, self.budget, self.should_stop, self.run_id, self.box)
        if end.stopped:
            stopped = apply_stop(RunOutcome(Status.PASSED, [], Counts()), end, self.budget)
            results.step_failed(number, run.argv, "was stopped", stopped.status)
            results.reason = stopped.reason
            return True
        why = f"could not start: {end.not_started}" if end.not_started else \
            f"failed with exit status {end.returncode}" if end.returncode != 0 else ""
        if why and not run.ignore_exit:
            results.step_failed(number, run.argv, why, Status.ERROR if end.not_started else Status.FAILED)
        elif why:
            self.say(f"[volt: {results.label(number, run.argv)} {why}]")
        return bool(why)

    def _tests(self, number: int, run: Run, cwd: Path, where: str, results: Results, python: str,
               retries: int) -> bool:
        """A test run: its tests are the build's, its failed ones run again; whether it failed."""
        assert self.box is not None and run.suite is not None
        self.say(f"[volt: {results.label(number, run.argv)}: {run.suite.kind}, its tests are the build's{where}]")
        self.say(f"$ {run.suite.describe()}")
        outcome = run_tests(cwd, self.box, run.suite, self.budget, self.log_path, python=python,
                            tail_lines=self.settings.log_tail_lines, should_stop=self.should_stop, run_id=self.run_id,
                            append=True)  # one results file, which the build's progress is read from
        if outcome.status is Status.FAILED and retries:
            outcome = self._retry_failed(outcome, retries, run.suite, cwd)
        results.tests_of(number, run.argv, outcome)
        return outcome.status is not Status.PASSED

    def _retry_failed(self, outcome: RunOutcome, retries: int, suite: Suite | None = None,
                      cwd: Path | None = None) -> RunOutcome:
        """Run each failed test again on its own, up to `retries` times; one that passes is `flaky`."""
        box, planned, python = self._ready()
        suite, cwd = suite or planned, cwd or self.tree
        failing = sorted({plain_test_id(t.subtest_of or t.id) for t in outcome.tests
                          if t.outcome in (Outcome.FAILED, Outcome.ERROR)})
        if len(failing) > MAX_RETRIED_TESTS:
            return outcome
        remaining, flaky = set(failing), {}
        for attempt in range(1, retries + 1):
            results_path = box.out / f"retry-{attempt}.jsonl"
            self.say(f"[volt: running {len(remaining)} failed test(s) again on their own (retry {attempt})]")
            again = Selection(ids=tuple(sorted(remaining)), ids_file=box.inbox_file(f"retry-{attempt}-ids.txt"))
            end = run_process(suite.command(python, results_path, again), cwd, self.log_path, self.budget,
                              self.should_stop, self.run_id, box)
            if end.stopped:
                return apply_stop(outcome, end, self.budget)
            rerun = parse_results(results_path, end.returncode).tests
            still_failing = {plain_test_id(t.subtest_of or t.id) for t in rerun
                             if t.outcome in (Outcome.FAILED, Outcome.ERROR)}
            passed = {t.id for t in rerun if not t.subtest_of and t.outcome is Outcome.PASSED} & remaining
            passed -= still_failing
            flaky.update(dict.fromkeys(passed, attempt))
            remaining -= passed
            if not remaining:
                break
        for test in outcome.tests:
            parent = plain_test_id(test.subtest_of or test.id)
            if parent in flaky and test.outcome in (Outcome.FAILED, Outcome.ERROR):
                test.outcome = Outcome.FLAKY
                test.message = f"passed when run again on its own (retry {flaky[parent]}); it had failed with:\n" \
                               f"{test.message}"
        outcome.counts = outcome.recounted()
        if outcome.counts.failed == 0 and outcome.counts.errors == 0:
            outcome.status, outcome.reason = Status.PASSED, ""
        return outcome


def _setup_failure(end: ProcessEnd, number: int, step: list[str]) -> str:
    if end.not_started:
        return f"setup step {number} could not start: {end.not_started}"
    if not end.stopped and end.returncode != 0:
        return f"setup step {number} failed with exit status {end.returncode}: {shlex.join(step)}"
    return ""


def _error(reason: str, tail: str = "") -> RunOutcome:
    return RunOutcome(Status.ERROR, [], Counts(), reason, tail)


def _say(log_path: Path, line: str) -> None:
    """A line of Volt's own in the build's log, between the steps' output."""
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(line + "\n")
