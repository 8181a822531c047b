"""Zero-configuration detection against real projects: each sdist of bench/panel.toml, the plan Volt
detects from its own files, compared with the plan its maintainers' files call for (written down in
the panel after reading them); with --run, each plan carried out by hand in a fresh virtual
environment, its tests run, and their closing line shown.

    python bench/detect_panel.py                      # detection only: every project, one line each
    python bench/detect_panel.py --run iniconfig six  # also set up and run these projects' tests

Downloads with `pip download --no-binary :all: --no-deps` into --dir (kept between runs). --run
executes the projects' build steps and tests on this machine, outside Volt's sandbox: use it on a
machine you do not mind them running on.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from table import print_table  # noqa: E402

from voltci.runner.detect import DetectError, TestPlan, detect  # noqa: E402

PANEL = ROOT / "bench" / "panel.toml"
COMPARED = ("runner", "setup", "pytest_args", "start_dir", "pattern", "top_level_dir", "env")


def sdist(requirement: str, cache: Path) -> Path:
    """The unpacked sdist of `requirement` (name==version), downloaded once into `cache`."""
    name, version = requirement.lower().replace("-", "_").split("==")

    def downloaded() -> list[Path]:
        return [p for p in cache.glob("*") if p.is_file()
                and p.name.lower().replace("-", "_").replace(".", "_")
                .startswith(f"{name}_{version}_".replace(".", "_"))]

    if not downloaded():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
                        "-d", str(cache), requirement], check=True, stderr=subprocess.DEVNULL)
    (archive,) = downloaded()
    target = cache / "src" / archive.name.split(".tar")[0].removesuffix(".zip")
    if not target.exists():
        target.parent.mkdir(exist_ok=True)
        unpack = cache / "src" / "unpacking"
        shutil.rmtree(unpack, ignore_errors=True)
        if archive.suffix == ".zip":
            zipfile.ZipFile(archive).extractall(unpack)
        else:
            with tarfile.open(archive) as tar:
                tar.extractall(unpack, filter="data")
        (only,) = list(unpack.iterdir())
        only.rename(target)
        unpack.rmdir()
    return target


def expected(entry: dict) -> dict:
    defaults = {"pytest_args": [], "start_dir": ".", "pattern": "test*.py", "top_level_dir": None, "env": {}}
    return {key: entry.get(key, defaults.get(key)) for key in COMPARED}


def compare(entry: dict, tree: Path) -> tuple[str, TestPlan | None]:
    try:
        plan = detect(tree)
    except DetectError as exc:
        verdict = "as expected" if entry.get("error") == str(exc) else f"MISMATCH: error {exc}"
        return f"error, {verdict}", None
    if "error" in entry:
        return "MISMATCH: expected an error", plan
    got = {key: getattr(plan, key) for key in COMPARED}
    differs = [key for key in COMPARED if got[key] != expected(entry)[key]]
    shown = plan.runner + (f" {' '.join(plan.pytest_args)}" if plan.pytest_args else "") + \
        (f" -s {plan.start_dir}" if plan.runner == "unittest" else "")
    return (f"{shown}; {len(plan.setup)} setup steps; " +
            ("as expected" if not differs else f"MISMATCH in {', '.join(differs)}")), plan


def run(plan: TestPlan, tree: Path, keep_log: Path | None = None) -> str:
    """The plan by hand: a venv, the setup steps, the tests; their closing line."""
    with tempfile.TemporaryDirectory(prefix="volt-panel-") as scratch:
        tmp = Path(scratch) / "tmp"  # {tmp}: the build's temporary directory, as the runner gives it
        tmp.mkdir()
        work = Path(scratch) / "tree"
        shutil.copytree(tree, work)
        venv = Path(scratch) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        env = {**os.environ, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
               **{k: v.replace("{tmp}", str(tmp)) for k, v in plan.env.items()}}
        log = Path(scratch) / "log.txt"
        with log.open("w") as out:
            for step in plan.setup:
                argv = [part.replace("{tmp}", str(tmp)) for part in step]
                if subprocess.run(argv, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=1800).returncode:
                    return f"setup failed: {' '.join(argv)}"
            if plan.runner == "pytest":
                argv = ["pytest", *[a.replace("{tmp}", str(tmp)) for a in plan.pytest_args]]
            else:
                argv = ["python", "-m", "unittest", "discover", "-s", plan.start_dir, "-p", plan.pattern,
                        *(["-t", plan.top_level_dir] if plan.top_level_dir else [])]
            out.write("\n$ " + " ".join(argv) + "\n")
            out.flush()
            code = subprocess.run(argv, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=3600).returncode
        if keep_log is not None:
            shutil.copy(log, keep_log)
        text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        closing = next((line for line in reversed(lines) if line.startswith(("=", "Ran ", "OK", "FAILED"))), "")
        if plan.runner == "unittest":
            ran = next((line for line in reversed(lines) if line.startswith("Ran ")), "")
            closing = f"{ran}; {lines[-1] if lines else ''}"
        return f"exit {code}: {closing.strip('= ')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "volt-sdists",
                        help="where sdists are downloaded and unpacked (kept)")
    parser.add_argument("--logs", type=Path, default=None, help="keep each run's output here, as NAME.log")
    parser.add_argument("--run", nargs="*", default=[], metavar="NAME",
                        help="carry out these projects' plans and run their tests ('all' for every one)")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for entry in tomllib.loads(PANEL.read_text())["project"]:
        requirement = entry["requirement"]
        tree = sdist(requirement, args.dir)
        summary, plan = compare(entry, tree)
        rows.append((requirement, summary + ("" if entry.get("right", True) else " (known wrong)")))
        name = requirement.split("==")[0]
        if plan is not None and ("all" in args.run or name in args.run):
            if args.logs:
                args.logs.mkdir(parents=True, exist_ok=True)
            rows.append(("  run", run(plan, tree, args.logs / f"{name}.log" if args.logs else None)))
    print_table(rows)


if __name__ == "__main__":
    main()
