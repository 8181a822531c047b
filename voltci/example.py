"""The example repository `volt up` builds when it is given none: a tiny project with passing,
failing and skipped tests, so a first run shows every kind of result."""

from __future__ import annotations

from pathlib import Path

from voltci.git import git

FILES = {
    "calc/__init__.py": '"""A tiny calculator."""\n',
    "calc/ops.py": (
        "def add(a, b):\n    return a + b\n\n\n"
        "def mean(values):\n    return sum(values) / len(values)\n\n\n"
        "def percent(part, whole):\n    # Bug: integer division drops the fraction.\n"
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
    "README.md": "# calc\n\nAn example project for Volt CI.\n",
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
         "commit", "--quiet", "-m", "Add a calculator with its tests"], cwd=path)
    return path
