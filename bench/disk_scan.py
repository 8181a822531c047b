"""What the disk limit's watch costs: Volt's count (runner/disk.py) beside `du -s`, alternately, on a real
virtual environment and on a directory of many empty files, and the gate's removal (untrusted.remove_tree)
beside shutil.rmtree.

    python bench/disk_scan.py [--path DIR] [--files 200000] [--runs 5]

--path is the environment to count (default: the one this Python runs in, a few thousand files for
Volt's own). While a build runs the runner counts in slices, at most TICK_ENTRIES entries or TICK_S
seconds each second, and once in full when its steps end: the table gives the entries and bytes each
tool counted, the median time of a full count by each and their ratio, how many seconds (ticks) a pass
over it takes while a build runs, and what share of one core a tick costs. Then the same for --files
empty files in one directory, and the time to remove them.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from table import print_table  # noqa: E402

from voltci.runner.disk import TICK_ENTRIES, TICK_S, Pass  # noqa: E402
from voltci.runner.untrusted import remove_tree  # noqa: E402
from voltci.sizes import human_size  # noqa: E402


def volt_count(path: Path) -> tuple[float, Pass]:
    counting = Pass([path])
    started = time.perf_counter()
    try:
        counting.advance(sys.maxsize, 600)
    finally:
        counting.close()
    return time.perf_counter() - started, counting


def du_count(path: Path) -> tuple[float, int]:
    started = time.perf_counter()
    out = subprocess.run(["du", "-s", "--block-size=1", str(path)], capture_output=True, text=True, check=True,
                         timeout=600).stdout
    return time.perf_counter() - started, int(out.split()[0])


def ticks(path: Path) -> int:
    """Seconds of a build a pass over `path` takes: slices as the Watch advances them."""
    counting = Pass([path])
    try:
        slices = 1
        while not counting.advance(TICK_ENTRIES, TICK_S):
            slices += 1
        return slices
    finally:
        counting.close()


def measure(name: str, path: Path, runs: int) -> list[tuple[str, str]]:
    volt_s, du_s = [], []
    counted, du_bytes = None, 0
    for _ in range(runs):
        elapsed, counted = volt_count(path)
        volt_s.append(elapsed)
        elapsed, du_bytes = du_count(path)
        du_s.append(elapsed)
    assert counted is not None
    volt, du = statistics.median(volt_s), statistics.median(du_s)
    per_tick = min(TICK_S, volt * TICK_ENTRIES / max(counted.visited, 1))
    return [
        (f"{name}: entries", f"{counted.visited:,}"),
        (f"{name}: counted by Volt / by du", f"{human_size(counted.usage.bytes)} / {human_size(du_bytes)}"),
        (f"{name}: a full count, Volt / du (median of {runs})", f"{volt * 1000:.1f} ms / {du * 1000:.1f} ms = "
                                                                 f"{volt / du:.2f}"),
        (f"{name}: seconds of a build a pass takes", f"{ticks(path)}"),
        (f"{name}: share of one core while a build runs", f"{per_tick:.1%}"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", type=Path, default=Path(sys.prefix))
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = measure("environment", args.path, args.runs)
    with tempfile.TemporaryDirectory(prefix="volt-disk-bench-") as scratch:
        for copy in range(2):
            many = Path(scratch) / f"many{copy}"
            many.mkdir()
            for n in range(args.files):
                (many / f"f{n}").touch()
        rows += measure("empty files", Path(scratch) / "many0", args.runs)
        started = time.perf_counter()
        remove_tree(Path(scratch) / "many0")
        volt = time.perf_counter() - started
        started = time.perf_counter()
        shutil.rmtree(Path(scratch) / "many1")
        rmtree = time.perf_counter() - started
        rows.append(("empty files: removal, Volt / shutil.rmtree",
                     f"{volt:.2f} s / {rmtree:.2f} s = {volt / rmtree:.2f}"))
    print_table(rows)


if __name__ == "__main__":
    main()
