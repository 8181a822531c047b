"""Builds the project's wheel with its own build backend (PEP 517), as `pip install .` would, from
build requirements installed once per environment instead of into a new isolated one every build.

This file runs inside the build's sandbox, under the build environment's Python (any Python 3 a matrix
leg uses), so it uses the standard library only and imports nothing from Volt. It isolates the
backend as pip's build isolation does: the environment's site-packages are taken off `sys.path`, and
the directory holding the build requirements (`--requirements-dir`, installed there by pip) is put in
their place; `backend-path` entries come first. Then it asks the backend what else it needs
(`get_requires_for_build_wheel`) and builds. It writes one JSON object to `--result`:

    {"wheel": "name-1.0-py3-none-any.whl",      built into --out           exit 0
     "requires_dist": [...]}                    its METADATA's Requires-Dist
    {"missing": ["wheel", ...]}                 the backend needs these    exit 3
    {"unsupported": "..."}                      no such hook (editable)    exit 4

The backend's own output (setuptools prints every file it copies) goes to `--backend-log`, and is
shown on stderr only when the build fails, as pip does.
"""

from __future__ import annotations

import argparse
import email.parser
import importlib
import json
import os
import site
import sys
import traceback
import zipfile
from typing import Any

MISSING = 3
UNSUPPORTED = 4
EXITS = (0, MISSING, UNSUPPORTED)  # those that come with a result
MAX_METADATA_BYTES = 4 * 1024 * 1024


def isolate(requirements_dir: str) -> None:
    """pip's build isolation: the environment's own packages hidden, the build requirements shown."""
    hidden = {os.path.realpath(path) for path in [*site.getsitepackages(), site.getusersitepackages()]}
    here = os.path.realpath(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:] = [path for path in sys.path if os.path.realpath(path or ".") not in hidden | {here}]
    site.addsitedir(requirements_dir)
    os.environ["PYTHONPATH"] = requirements_dir  # for the Python processes a backend starts
    os.environ["PYTHONNOUSERSITE"] = "1"
    os.environ["PATH"] = os.path.join(requirements_dir, "bin") + os.pathsep + os.environ.get("PATH", "")


def load_backend(spec: str, backend_path: list[str]) -> Any:
    """The backend object `spec` names ("module:object.attr"), imported with `backend_path` first."""
    for path in reversed(backend_path):
        sys.path.insert(0, os.path.abspath(path))
    module_name, _, attributes = spec.partition(":")
    backend: Any = importlib.import_module(module_name.strip())
    for attribute in filter(None, attributes.strip().split(".")):
        backend = getattr(backend, attribute)
    return backend


class BackendOutput:
    """The backend's output, at the descriptor level (its subprocesses' too), into a file of its own."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.saved: list[int] = []

    def __enter__(self) -> BackendOutput:
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.saved = [os.dup(1), os.dup(2)]
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for target, saved in enumerate(self.saved, 1):  # stdout, stderr
            os.dup2(saved, target)
            os.close(saved)


def build(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    backend = load_backend(args.backend, args.backend_path)
    hook = "build_editable" if args.editable else "build_wheel"
    if not hasattr(backend, hook):
        return {"unsupported": f"the build backend {args.backend} has no {hook} hook"}, UNSUPPORTED
    installed = set(args.installed)
    get_requires = getattr(backend, "get_requires_for_" + hook, None)
    wanted = list(get_requires(None)) if get_requires is not None else []
    missing = [requirement for requirement in wanted if requirement not in installed]
    if missing:
        return {"missing": missing}, MISSING
    os.makedirs(args.out, exist_ok=True)
    wheel = getattr(backend, hook)(args.out, None)
    return {"wheel": wheel, "requires_dist": requires_dist(os.path.join(args.out, wheel))}, 0


def requires_dist(wheel: str) -> list[str]:
    """The dependencies a wheel declares: the Requires-Dist lines of its METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            top, _, rest = name.partition("/")
            if top.endswith(".dist-info") and rest == "METADATA":
                with archive.open(name) as metadata:
                    message = email.parser.BytesHeaderParser().parsebytes(metadata.read(MAX_METADATA_BYTES))
                return [str(value) for value in message.get_all("Requires-Dist") or []]
    raise ValueError(f"{os.path.basename(wheel)} holds no .dist-info/METADATA")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requirements-dir", required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--backend-path", action="append", default=[])
    parser.add_argument("--installed", action="append", default=[], help="a build requirement already installed")
    parser.add_argument("--editable", action="store_true")
    parser.add_argument("--out", required=True, help="the directory the wheel is built into")
    parser.add_argument("--result", required=True)
    parser.add_argument("--backend-log", required=True)
    args = parser.parse_args(argv)
    isolate(args.requirements_dir)
    try:
        with BackendOutput(args.backend_log):
            result, code = build(args)
    except BaseException:
        with open(args.backend_log, encoding="utf-8", errors="replace") as output:
            sys.stderr.write(output.read()[-20_000:])
        sys.stderr.write(f"the build backend {args.backend} failed:\n{traceback.format_exc()}")
        return 1
    with open(args.result, "w", encoding="utf-8") as out:
        json.dump(result, out)
    return code


if __name__ == "__main__":
    sys.exit(main())
