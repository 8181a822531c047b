"""The failing tests of a run, as its results file grows: how many so far, and the first one's id, so
that a commit status can name it the moment it fails (commitstatus.py).

The results file is the build's to write (its collector's JSON lines, runner/testrun.py): each line
is read within bounds (LINE_MAX; a longer one is skipped), parsed only when it may be a failure, and
nothing of it is trusted but a string id, which is cut to ID_MAX.
"""

from __future__ import annotations

import json

LINE_MAX = 64 * 1024
ID_MAX = 1024
_FAILING = ("failed", "error")
_HINTS = (b'"failed"', b'"error"')


class FailureScan:
    """Fed the results file's bytes in order (`feed`); `failing` and `first` say what failed so far."""

    def __init__(self) -> None:
        self.failing = 0
        self.first = ""
        self._line = bytearray()
        self._skipping = False  # inside a line longer than LINE_MAX

    def feed(self, data: bytes) -> None:
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            piece = data[start:] if end < 0 else data[start:end]
            if not self._skipping:
                if len(self._line) + len(piece) > LINE_MAX:
                    self._skipping, self._line = True, bytearray()
                else:
                    self._line += piece
            if end < 0:
                return
            if not self._skipping:
                self._take(bytes(self._line))
            self._line, self._skipping = bytearray(), False
            start = end + 1

    def _take(self, line: bytes) -> None:
        if not any(hint in line for hint in _HINTS):
            return
        try:
            record = json.loads(line)
        except ValueError:
            return
        if not isinstance(record, dict) or record.get("outcome") not in _FAILING:
            return
        test_id = record.get("id")
        if not isinstance(test_id, str) or not test_id:
            return
        self.failing += 1
        if not self.first:
            self.first = test_id[:ID_MAX]
