"""The rq job the dispatch figure of bench/fast.py compares Volt's builds with: the same trivial
suite, run in a subprocess, with none of Volt's bookkeeping."""

import subprocess
import sys


def run_suite(tree: str) -> int:
    return subprocess.run([sys.executable, "-m", "unittest", "discover"], cwd=tree, capture_output=True,
                          timeout=300).returncode
