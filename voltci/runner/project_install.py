"""The project itself installed into its build's environment as tox does it: a wheel built by the
project's own build backend in a build environment kept from build to build, then installed without
re-resolving dependencies that have not changed.

`pip install .` makes a new isolated build environment every time, installing the backend into it
again (flit_core, setuptools, hatchling...), then builds, then resolves the project's dependencies:
most of a second for the smallest project, on every build, though only the project's code changed.
Here, in the build's sandbox, as its setup step:

1. the `[build-system]` requirements are installed once per environment, with its own pip, into a
   directory inside it (`pip install --target`); a stamp beside the environment records them;
2. wheel_builder.py builds the wheel (or the editable wheel) in the tree, isolated as pip isolates
   it; requirements the backend asks for on top (`get_requires_for_build_wheel`) are installed the
   same way, and the build is tried once more;
3. the wheel is installed over the project's last version without touching its dependencies
   (`uv pip install --no-deps --reinstall`, or pip's `--no-deps --force-reinstall` on a host without
   uv: nothing is resolved, so the installer makes no difference) when they (its `Requires-Dist` and
   the extras asked for) are those the last build of this environment installed; otherwise
   `pip install WHEEL[extras]` first, which resolves them as pip does.

What is installed is what `pip install .` installs, built by the same backend; only the versions of
the build requirements stay those of the environment's first build, as tox keeps them. A backend
without the editable hook (PEP 660) gets the original `pip install -e .` step.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from voltci.runner import untrusted, wheel_builder
from voltci.runner.detect import PIP, ProjectInstall
from voltci.runner.environments import Environment, stamp
from voltci.runner.installs import read_stamp, write_stamp
from voltci.runner.procs import ProcessEnd
from voltci.runner.sandbox import uv_binary

REQUIREMENTS_DIR = "volt-build-requirements"  # inside the environment
MAX_RESULT_BYTES = 1024 * 1024
DIST = "dist"  # in the build's results directory: where the wheel is built

Run = Callable[[list[str]], ProcessEnd]


@dataclass(frozen=True)
class Ended:
    """How the project's install ended: the last process it ran, and that process's command."""

    end: ProcessEnd
    command: list[str]

    @property
    def ok(self) -> bool:
        return self.end.returncode == 0 and not self.end.stopped and not self.end.not_started


class ProjectInstaller:
    """Installs the project into `env` by running its commands through `run` (in the build's sandbox,
    its output in the build's log) and telling the log what it does through `say`. `out` is the
    build's results directory, writable in the sandbox: the wheel is built there."""

    def __init__(self, env: Environment, out: Path, run: Run, say: Callable[[str], None]):
        self.env, self.out, self.run, self.say = env, out, run, say
        self.requirements_dir = env.path / REQUIREMENTS_DIR

    def install(self, project: ProjectInstall, plain_step: list[str], resolve: bool) -> Ended:
        """Install the project (`plain_step` is what pip would be asked); `resolve`: its dependencies are
        resolved whatever the last build installed (a step before this one installed something)."""
        built = self._build_wheel(project)
        if isinstance(built, Ended):
            return built
        if built is None:  # no editable hook: pip does it its own way
            return self._step(plain_step)
        wheel, requires_dist = built
        key = _dependencies_key(requires_dist, project.extras)
        same = not resolve and read_stamp(self.env.home, "project") == key
        if same:
            self.say("[volt: the wheel asks for the dependencies the last build of this environment installed, "
                     "and nothing was installed since: they are not resolved again]")
        else:
            stamp(self.env.home, "project").unlink(missing_ok=True)
            extras = f"[{','.join(project.extras)}]" if project.extras else ""
            ended = self._step([*PIP, f"{wheel}{extras}"])
            if not ended.ok:
                return ended
        ended = self._reinstall(wheel)
        if ended.ok and not same:
            write_stamp(self.env.home, "project", key)
        return ended

    def _reinstall(self, wheel: Path) -> Ended:
        """The wheel over the project's installed version, its dependencies left as they are: nothing is
        resolved, so uv does it where the runner has it (in a tenth of pip's time), else pip."""
        pip = [*PIP, "--no-deps", "--force-reinstall", "--no-index", str(wheel)]
        uv = uv_binary()
        if uv is None:
            return self._step(pip)
        ended = self._step([str(uv), "pip", "install", "--python", str(self.env.python), "--no-deps", "--reinstall",
                            "--no-index", "--link-mode=copy", str(wheel)])
        if ended.ok or ended.end.stopped:
            return ended
        self.say("[volt: uv could not install the wheel: pip does]")
        return self._step(pip)

    def _build_wheel(self, project: ProjectInstall) -> tuple[Path, list[str]] | Ended | None:
        """(the wheel, its Requires-Dist); an Ended when a step failed; None when the backend has no
        editable hook."""
        build = project.build
        installed = self._installed_requirements()
        if not set(build.requires) <= set(installed) or not self.env.holds(REQUIREMENTS_DIR):
            ended = self._install_requirements(list(build.requires))
            if not ended.ok:
                return ended
            installed = list(build.requires)
        end, said = self._run_builder(project, installed)
        missing = said.get("missing")
        if end.returncode == wheel_builder.MISSING and isinstance(missing, list):
            installed = [*installed, *(str(item) for item in missing if str(item) not in installed)]
            ended = self._install_requirements(installed)
            if not ended.ok:
                return ended
            end, said = self._run_builder(project, installed)
        if end.returncode == wheel_builder.UNSUPPORTED and "unsupported" in said:
            self.say(f"[volt: {said['unsupported']}: installed by pip instead]")
            return None
        wheel, requires = said.get("wheel"), said.get("requires_dist")
        if end.returncode == 0 and isinstance(wheel, str) and _is_file_name(wheel, ".whl") and \
                isinstance(requires, list):
            return self.out / DIST / wheel, [str(item) for item in requires]
        if end.returncode == wheel_builder.MISSING:
            self.say(f"[volt: the build backend still asks for {', '.join(map(str, said.get('missing') or []))} "
                     "after they were installed]")
        failed = end if end.returncode != 0 or end.stopped or end.not_started else ProcessEnd(1)
        return Ended(failed, [_hook(project), "of", build.backend])

    def _run_builder(self, project: ProjectInstall, installed: list[str]) -> tuple[ProcessEnd, dict]:
        """wheel_builder.py in the sandbox, and what it said it did (see its docstring)."""
        build, result = project.build, self.out / "wheel-build.json"
        command = [str(self.env.python), wheel_builder.__file__, "--requirements-dir", str(self.requirements_dir),
                   "--backend", build.backend, "--out", str(self.out / DIST), "--result", str(result),
                   "--backend-log", str(self.out / "build-backend.log"),
                   *[f"--backend-path={path}" for path in build.backend_path],
                   *[f"--installed={requirement}" for requirement in installed],
                   *(["--editable"] if project.editable else [])]
        self.say(f"[volt: the project's wheel: {_hook(project)} of {build.backend} (PEP 517), as pip calls it, "
                 "with the build requirements installed once in this environment]")
        untrusted.remove(result, self.out)
        end = self.run(command)
        return end, self._result(result) if end.returncode in wheel_builder.EXITS else {}

    def _install_requirements(self, requirements: list[str]) -> Ended:
        """The build requirements into the environment's build directory, recorded once they are in."""
        stamp(self.env.home, "backend").unlink(missing_ok=True)
        ended = self._step([*PIP, "--target", str(self.requirements_dir), "--upgrade", "--no-warn-script-location",
                            *requirements]) if requirements else Ended(ProcessEnd(0), [])
        if ended.ok:
            self.env.make_dir(REQUIREMENTS_DIR)
            write_stamp(self.env.home, "backend", json.dumps(requirements))
        return ended

    def _installed_requirements(self) -> list[str]:
        try:
            found = json.loads(read_stamp(self.env.home, "backend") or "[]")
        except ValueError:
            return []
        return [str(item) for item in found] if isinstance(found, list) else []

    def _result(self, path: Path) -> dict:
        """What wheel_builder.py wrote (a file the build could have replaced: read as untrusted)."""
        try:
            found = json.loads(untrusted.read_capped(path, self.out, MAX_RESULT_BYTES))
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def _step(self, command: list[str]) -> Ended:
        self.say(f"$ {shlex.join(command)}")
        return Ended(self.run(command), command)


def _hook(project: ProjectInstall) -> str:
    return "build_editable" if project.editable else "build_wheel"


def _dependencies_key(requires_dist: list[str], extras: tuple[str, ...]) -> str:
    text = json.dumps([sorted(requires_dist), sorted(extras)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _is_file_name(name: str, suffix: str) -> bool:
    return name.endswith(suffix) and "/" not in name and "\0" not in name and name not in (".", "..")
