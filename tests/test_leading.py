"""The acting scheduler's duty loop (leading.py), with its lead, its steps and Redis failing as a test
drives them: each lead gained is taken over once, each failed step is said and waited out, and nothing runs unled."""

from __future__ import annotations

import logging
import threading

import redis

from voltci.leading import while_leading
from voltci.outage import Outage


class Script:
    """The loop's collaborators: a lead that comes and goes, a step that fails with Redis now and then."""

    def __init__(self, leads: list[bool], steps: list[str], stop: threading.Event):
        self.leads, self.steps, self.stop = leads, steps, stop
        self.took_over = 0
        self.ran = 0

    def is_leading(self) -> bool:
        if not self.leads:
            self.stop.set()
            return False
        return self.leads.pop(0)

    def step(self) -> float:
        self.ran += 1
        if self.steps and self.steps.pop(0) == "down":
            raise redis.ConnectionError("gone")
        return 0.0


def test_each_lead_gained_is_taken_over_once_and_steps_run_only_while_leading(monkeypatch, caplog) -> None:
    stop = threading.Event()
    monkeypatch.setattr(stop, "wait", lambda seconds=None: stop.is_set())  # no real waiting
    script = Script([True, True, False, True, True, True], ["ok", "ok", "down", "down", "ok"], stop)
    log = logging.getLogger("volt.test.leading")
    with caplog.at_level(logging.WARNING, logger="volt.test.leading"):
        while_leading(stop, script.is_leading, lambda: setattr(script, "took_over", script.took_over + 1),
                      script.step, Outage(log, "duty"))
    assert script.took_over == 2  # the lead was gained twice
    assert script.ran == 5  # one step per leading pass
    assert len([r for r in caplog.records if "gone" in r.getMessage()]) == 2  # each failed step said, none fatal
