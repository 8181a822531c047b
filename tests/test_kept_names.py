"""Names Volt keeps for what it does not control: the job function names every queued rq job holds,
and the modules users name (`rq worker -w voltci.worker.VoltWorker`, `voltci.web_server`). Each still
leads to the one definition, and Volt's own code goes to that definition directly."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys

from rq.utils import import_attribute
from support import ROOT, child_env

import voltci.runner
from voltci.jobqueue import JOB_ARGUMENTS
from voltci.runner import jobs, worker
from voltci.web import server

SHIMS = {"voltci.worker": worker, "voltci.web_server": server}


def test_every_job_name_rq_holds_leads_to_the_job_function_with_the_arguments_refusal_allows() -> None:
    assert set(JOB_ARGUMENTS) == {f"voltci.runner.{name}" for name in voltci.runner.JOB_FUNCTIONS}
    for name, types in JOB_ARGUMENTS.items():
        function = import_attribute(name)  # how rq finds a job's function when a runner takes it
        assert function is getattr(jobs, name.rsplit(".", 1)[1]), name
        annotations = [parameter.annotation for parameter in inspect.signature(function).parameters.values()]
        assert annotations == [kind.__name__ for kind in types], name


def test_the_runner_package_loads_the_job_functions_only_when_a_job_names_one() -> None:
    script = ("import sys\nimport voltci.runner.limits, voltci.runner.scopes\n"
              "assert 'voltci.runner.jobs' not in sys.modules, 'loaded with a part of the runner'\n"
              "from rq.utils import import_attribute\n"
              "import voltci.runner.jobs\n"
              "assert import_attribute('voltci.runner.run_leg') is voltci.runner.jobs.run_leg\n")
    proc = subprocess.run([sys.executable, "-c", script], env=child_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_an_unknown_name_in_the_runner_package_is_an_attribute_error() -> None:
    assert not hasattr(voltci.runner, "run_anything")


def test_the_modules_users_name_still_hand_out_what_they_did() -> None:
    assert import_attribute("voltci.worker.VoltWorker") is worker.VoltWorker  # as `rq worker -w` finds it
    assert import_attribute("voltci.worker.make_worker") is worker.make_worker
    for name in ("serve", "start", "url_of"):
        assert import_attribute(f"voltci.web_server.{name}") is getattr(server, name)


def imported_by(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update({node.module, *(f"{node.module}.{alias.name}" for alias in node.names)})
    return found


def test_volt_itself_imports_the_real_modules_never_the_ones_kept_for_users() -> None:
    kept = {ROOT / (name.replace(".", "/") + ".py") for name in SHIMS}
    found = {str(path.relative_to(ROOT)): sorted(imported_by(path) & set(SHIMS))
             for path in (ROOT / "voltci").rglob("*.py") if path not in kept}
    assert {path: names for path, names in found.items() if names} == {}
