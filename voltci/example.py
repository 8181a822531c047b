"""The example repository `volt up` builds when it is given none: a tiny project with passing,
failing and skipped tests, so a first run shows every kind of result. Its first build fails on
purpose, and says so three times (in `volt up`'s output, its commit and its README), lest a new user
take the red build for Volt's fault; fixing the bug and committing shows a build that passes."""

from __future__ import annotations

from pathlib import Path

from voltci.git import git

ON_PURPOSE = ("its first build fails on purpose (percent() in calc/ops.py drops the fraction): change its // "
              "to / and commit to see one pass")
SUBJECT = "Add a calculator; its test_percent fails on purpose"
MESSAGE = (f"{SUBJECT}\n\n"
           "percent() in calc/ops.py uses integer division, so tests/test_ops.py's test_percent fails:\n"
           "Volt's first build of this repository shows what a failure looks like. Change its // to /\n"
           "and commit: the next build passes. (test_windows_paths is skipped: it runs only on Windows.)\n")

FILES = {
    "calc/__init__.py": '"""A tiny calculator."""\n',
    "calc/ops.py": (
        "def add(a, b):\n    return a + b\n\n\n"
        "def mean(values):\n    return sum(values) / len(values)\n\n\n"
        "def percent(part, whole):\n    # A bug, on purpose: integer division drops the fraction (use /).\n"
        "    return part * 100 // whole\n"
    ),
    "tests/__init__.py": "",
    "tests/test_ops.py": (
        "import sys\nimport unittest\n\nfrom calc.ops import add, mean, percent\n\n\n"
        "class TestOps(unittest.TestCase):\n"
        "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n\n"
        "    def test_mean(self):\n        self.assertEqual(mean([1, 2, 3]), 2)\n\n"
        "    def test_mean_of_nothing(self):\n        with self.assertRaises(ZeroDivisionError):\n"
        "            mean([])\n\n"
        "    def test_percent(self):\n        self.assertEqual(percent(1, 3), 33.333333333333336)\n\n"
        "    @unittest.skipIf(sys.platform != 'win32', 'only on Windows')\n"
        "    def test_windows_paths(self):\n        pass\n"
    ),
    "README.md": (
        "# calc\n\nAn example project for Volt CI: `volt up` made it, and builds each commit to it.\n\n"
        "**Its first build fails on purpose**: `percent()` in `calc/ops.py` uses integer division, so\n"
        "`test_percent` in `tests/test_ops.py` fails, to show what a failing build looks like (`volt report`,\n"
        "`volt log`, the web page). Change its `//` to `/` and commit: the next build passes.\n"
        "`test_windows_paths` is skipped: it runs only on Windows.\n"
    ),
}


def create_example_repo(path: Path) -> Path:
    """Create (or reuse) the example repository at `path`; returns its path."""
    if (path / ".git").is_dir():
        return path
    path.mkdir(parents=True, exist_ok=True)
    git(["init", "--quiet", "--initial-branch=main", str(path)])
    for name, text in FILES.items():
        file = path / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
    git(["add", "--all"], cwd=path)
    git(["-c", "user.name=Volt Example", "-c", "user.email=example@volt.invalid",
         "commit", "--quiet", "-m", MESSAGE], cwd=path)
    return path
