"""Telling the world a build ended: a JSON POST to `webhook_url`, signed with `webhook_secret`.

Every write of a build's final status also pushes the build's id onto an outbox list, in the same
transaction, so no ended build is missed. The acting scheduler empties the outbox from a thread of
its own: it moves a message to a `sending` list, POSTs it (a few tries with backoff, each bounded),
then removes it. A scheduler that takes over moves what was being sent back to the outbox, so a
message may arrive twice but is never lost while the outbox keeps it.

A failing build whose push's first failing commit is known carries it as `first_failing_commit`; when
culprit finding names it, a `culprit.found` message about the culprit's build is sent too. The moment
a build's first failing test is known (store/firstfailure.py) a `build.first_failure` message is sent,
once per attempt, naming it (`first_failure`) and when it was known (`first_failure_s`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from voltci.config import Settings
from voltci.leading import while_leading
from voltci.links import build_page_url
from voltci.models import Build
from voltci.outage import Outage
from voltci.store import Store
from voltci.store.firstfailure import EVENT as FIRST_FAILURE

log = logging.getLogger("volt.notify")
TRIES = 5
TIMEOUT_S = 5.0
BACKOFF_S = (1.0, 2.0, 4.0, 8.0)
SIGNATURE_HEADER = "X-Volt-Signature"
EVENTS = ("build.ended", "culprit.found", FIRST_FAILURE)


def message(build: Build, settings: Settings, event: str = "build.ended",
            found: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON body of `event` about `build`. A `build.first_failure` message names the test and its
    seconds as they were when it was known (`found`, the outbox message): by the time it is sent the
    build may have ended, or been queued again."""
    first = build.first_failing
    body = {"event": event, "repo": build.repo, "commit": build.commit, "branch": build.branch,
            "subject": build.subject, "status": build.status.value, "reason": build.reason,
            "counts": build.counts.to_dict(), "duration_s": build.duration_s, "attempts": build.attempt,
            "finished_at": build.finished_at, "url": build_page_url(settings, build),
            "first_failing_commit": {"commit": first.commit, "subject": first.subject, "author": first.author,
                                     "parent": first.parent} if first else None,
            "first_failure": build.first_failure or None, "first_failure_s": build.first_failure_s}
    if event == FIRST_FAILURE and found is not None:
        body["first_failure"] = str(found.get("first_failure") or "") or None
        seconds = found.get("first_failure_s")
        body["first_failure_s"] = seconds if isinstance(seconds, int | float) else None
    return body


def signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(url: str, body: bytes, secret: str | None) -> None:
    """One POST; raises on a network error or a status other than 2xx."""
    headers = {"Content-Type": "application/json", "User-Agent": "volt-ci"}
    if secret:
        headers[SIGNATURE_HEADER] = signature(body, secret)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        response.read(1024)


class WebhookSender:
    """Sends the outbox's messages while `is_leading()` says this scheduler acts."""

    def __init__(self, settings: Settings, store: Store, is_leading: Callable[[], bool]):
        self.settings, self.store, self.is_leading = settings, store, is_leading
        self._outage = Outage(log, "webhook")

    def run(self, stop: threading.Event) -> None:
        def step() -> float:
            self.send_next(stop)  # waits for a message itself
            return 0.0
        while_leading(stop, self.is_leading, self.recover, step, self._outage)

    def recover(self) -> None:
        """Messages a scheduler was sending when it stopped go back to the outbox."""
        self.store.outbox.recover()

    def send_next(self, stop: threading.Event, wait_s: float = 1.0) -> bool:
        """Send the oldest message, if one comes within `wait_s`; whether one was taken."""
        taken = self.store.outbox.take(wait_s)
        if taken is None:
            return False
        text, build_id = taken
        build = self.store.records.get_build(build_id)  # None when it was pruned meanwhile
        if build is not None and self.settings.webhook_url:
            found = json.loads(text)
            event = found.get("event", "build.ended")
            self._deliver(build, stop, event if event in EVENTS else "build.ended", found)
        self.store.outbox.done(text)
        return True

    def _deliver(self, build: Build, stop: threading.Event, event: str = "build.ended",
                 found: Mapping[str, Any] | None = None) -> None:
        body = json.dumps(message(build, self.settings, event, found)).encode()
        url = self.settings.webhook_url or ""
        for attempt in range(1, TRIES + 1):
            try:
                post(url, body, self.settings.webhook_secret)
                log.info("webhook: %s %s %s %s sent", event, build.repo, build.short, build.status.value)
                return
            except (urllib.error.URLError, OSError, ValueError) as exc:
                if attempt == TRIES:
                    log.warning("webhook: giving up on %s %s after %d tries: %s", build.repo, build.short,
                                TRIES, exc)
                    return
                log.warning("webhook: %s %s not sent (%s); trying again", build.repo, build.short, exc)
                if stop.wait(BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)]):
                    return
