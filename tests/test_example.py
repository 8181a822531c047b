"""The example repository `volt up` builds when given none: it says its first build fails on purpose,
and the fix it names makes the tests pass."""

from __future__ import annotations

import subprocess
import sys

import pytest

from voltci.example import ON_PURPOSE, create_example_repo

pytestmark = pytest.mark.e2e  # real git and a real unittest run


def unittest_run(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unittest", "discover", "-s", ".", "-p", "test*.py"], cwd=path,
                          capture_output=True, text=True, timeout=60)


def test_the_example_says_its_first_build_fails_on_purpose_and_how_to_fix_it(tmp_path) -> None:
    path = create_example_repo(tmp_path / "example")
    message = subprocess.run(["git", "log", "-1", "--format=%B"], cwd=path, capture_output=True, text=True,
                             check=True).stdout
    assert "fails on purpose" in message.splitlines()[0]  # the subject: what volt up's stream shows
    assert "fails on purpose" in (path / "README.md").read_text() and "fails on purpose" in ON_PURPOSE

    first = unittest_run(path)
    assert first.returncode == 1 and "FAIL: test_percent" in first.stderr and "failures=1" in first.stderr
    ops = path / "calc" / "ops.py"
    ops.write_text(ops.read_text().replace("part * 100 // whole", "part * 100 / whole"))  # "change its // to /"
    fixed = unittest_run(path)
    assert fixed.returncode == 0 and "OK (skipped=1)" in fixed.stderr, fixed.stderr
