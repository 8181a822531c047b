"""Text a build controls, made safe to print on a terminal.

A commit writes what its tests print, their ids and messages, and its own subject; `volt log`, `volt
report`, `volt history`, `volt status`, `volt test-history` and `volt up` print them. A terminal obeys
what it is sent: an OSC sequence sets the window title, writes the clipboard or makes a link, a `\\r`
or a cursor movement overwrites "FAILED" with "passed", a DCS talks to the terminal itself. So every
control is taken out before it is printed, but newline and tab:

- ESC sequences whole (CSI `ESC [ … final`, the string ones OSC, DCS, SOS, PM and APC up to their
  terminator — BEL, `ESC \\` or ST — or the end of the line, and two-byte ones like `ESC c`), and the
  same sequences in their 8-bit forms (C1 `U+009B` CSI, `U+009D` OSC, …);
- then every other C0 control, DEL and C1 control (U+0080–U+009F), one by one;
- bidirectional overrides, embeddings, isolates and marks (U+202A–U+202E, U+2066–U+2069, U+200E,
  U+200F, U+061C) are not obeyed but shown, as `<U+202E>`, so that text cannot read in another order
  than it is stored ("Trojan Source").

`clean` works on whole text; `Cleaner` on a stream cut anywhere (`volt log -f`), holding back the
start of a sequence that the next piece ends. JSON needs neither: `json.dumps` escapes every control.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import click

_SEQUENCE = re.compile(
    # CSI: parameters, intermediates, one final byte (an unfinished one ends at the first other character)
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*(?P<csi>[@-~])?"
    # OSC, DCS, SOS, PM, APC: a string up to BEL, ST or ESC \, never past the end of the line
    r"|(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f])[^\x07\x1b\x9c\n]*(?P<string>\x07|\x9c|\x1b\\)?"
    # any other escape: intermediates, then one final byte
    r"|\x1b[ -/]*(?P<escape>[0-~])?"
)
_INTRODUCERS = "\x1b\x9b\x9d\x90\x98\x9e\x9f"
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
_ANY = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
HOLD_MAX = 4096  # the most of an unfinished sequence a Cleaner keeps for the next piece


def _visible(match: re.Match[str]) -> str:
    return f"<U+{ord(match.group()):04X}>"


def clean(text: str) -> str:
    """`text` with every control but newline and tab removed, and bidi controls shown (see above)."""
    if not _ANY.search(text):
        return text  # the common case: nothing to do
    text = text.replace("\r\n", "\n")
    return _BIDI.sub(_visible, _CONTROL.sub("", _SEQUENCE.sub("", text)))


class Cleaner:
    """`clean` for a stream that arrives in pieces: a sequence cut between two pieces is held back
    (up to HOLD_MAX characters, and never past a newline) and cleaned whole with the next piece."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, piece: str) -> str:
        text, self._held = self._held + piece, ""
        start = max(text.rfind(ch) for ch in _INTRODUCERS)
        if start >= 0 and len(text) - start <= HOLD_MAX:
            found = _SEQUENCE.match(text, start)
            ended = found is not None and any(found.group(end) for end in ("csi", "string", "escape"))
            if found is not None and found.end() == len(text) and not ended:
                text, self._held = text[:start], text[start:]
        return clean(text)

    def flush(self) -> str:
        """What is held back, cleaned (at the end of the stream)."""
        held, self._held = self._held, ""
        return clean(held)


def echo(text: Any = "", err: bool = False, nl: bool = True) -> None:
    """click.echo of `text`, cleaned: how the CLI prints anything a build may have written."""
    click.echo(clean(str(text)), err=err, nl=nl)


class CleanFormatter(logging.Formatter):
    """Log lines cleaned as they are formatted: a log line may quote a commit's subject or a test's output."""

    def format(self, record: logging.LogRecord) -> str:
        return clean(super().format(record))
