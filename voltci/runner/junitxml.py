"""Per-test results from the JUnit XML file a project's own test command writes (pytest's
`--junitxml`, and most other runners'), read as a stream within bounds decided before parsing.

The build wrote the file, and a commit may be hostile: 200 MB of text in one element, an attribute of
200 MB, elements nested 100,000 deep, entities that expand a billion times, ten million tiny test
cases. Why expat (xml.parsers.expat) with handlers of our own rather than ElementTree: ElementTree's
iterparse builds each element whole — its text and attributes in memory — before it can be looked at,
so one testcase with 200 MB of text took the runner to 1.36 GB. Here the handlers keep only the head
and the tail of a test's message as its text streams by (MESSAGE_MAX), ignore every other text, and
count the bytes fed since expat last called one of them, so that one token (a start tag, an
attribute, a comment) larger than TOKEN_MAX is refused before expat has buffered more. A DOCTYPE is
refused outright (JUnit files have none): no entity is declared, none expands. The file is read at
most FILE_MAX bytes, nested at most DEPTH_MAX deep, at most RECORDS_MAX test cases and ELEMENTS_MAX
elements; the tests kept go through the store's Keeper (store/budget.py). Any of those broken is a
JUnitError in one line; a `time` that is not a number of seconds is dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from xml.parsers import expat

from voltci.models import Counts, Cut, Outcome, TestResult
from voltci.runner import untrusted
from voltci.store.budget import MESSAGE_MAX, Keeper, clean, clip_message, seconds

FILE_MAX = 1024 * 1024 * 1024  # bytes of the file
TOKEN_MAX = 4 * 1024 * 1024  # bytes fed with no call of a handler: one token being buffered
DEPTH_MAX = 32
RECORDS_MAX = 2_000_000  # test cases
ELEMENTS_MAX = 20_000_000
CHUNK = 64 * 1024
OUTCOMES = {"failure": Outcome.FAILED, "error": Outcome.ERROR, "skipped": Outcome.SKIPPED}


class JUnitError(Exception):
    """The file is missing, is not JUnit XML, or breaks a bound, in one line."""


@dataclass
class JUnitResults:
    """The tests kept of a JUnit file, the counts of every test case in it, and what was cut."""

    tests: list[TestResult]
    counts: Counts
    cut: Cut


def read(path: Path, inside: Path) -> JUnitResults:
    """The tests of the JUnit file at `path`, which the build wrote somewhere below `inside`."""
    if not path.exists() and not path.is_symlink():
        raise JUnitError(f"no JUnit XML file at {path.name}")
    try:
        source = untrusted.open_binary(path, inside)
    except OSError as exc:
        raise JUnitError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    with source:
        return parse(source, path.name)


class _Text:
    """A text as it streams by: its first and last MESSAGE_MAX characters, and its size in bytes."""

    def __init__(self) -> None:
        self.head: list[str] = []
        self.head_size = 0
        self.tail = ""
        self.chars = 0
        self.bytes = 0

    def add(self, data: str) -> None:
        self.chars += len(data)
        self.bytes += len(data.encode("utf-8", "surrogatepass"))
        if self.head_size < MESSAGE_MAX:
            taken = data[:MESSAGE_MAX - self.head_size]
            self.head.append(taken)
            self.head_size += len(taken)
            data = data[len(taken):]
        if data:
            self.tail = (self.tail + data)[-MESSAGE_MAX:]

    def message(self) -> tuple[str, int]:
        """The text stripped, at most MESSAGE_MAX bytes (its head and tail with a marker between, as
        budget.clip_message makes it), and the bytes cut."""
        head = "".join(self.head)
        if self.chars == len(head) + len(self.tail):  # all of it is here
            return clip_message((head + self.tail).strip())
        half = (MESSAGE_MAX - 80) // 2
        start = clean(head.lstrip()).encode()[:half].decode("utf-8", "ignore")
        end = clean(self.tail.rstrip()).encode()[-half:].decode("utf-8", "ignore")
        cut = max(0, self.bytes - len(start.encode()) - len(end.encode()))
        return f"{start}\n[volt: {cut} bytes of this message were cut here]\n{end}", cut


class _Reader:
    """expat's handlers: one test case at a time, into a Keeper."""

    def __init__(self, name: str):
        self.name = name
        self.keeper = Keeper(distinct=True)
        self.depth = 0
        self.elements = 0
        self.cases = 0
        self.root = ""
        self.calls = 0  # handler calls, for the token bound
        self.case: dict[str, str] | None = None
        self.case_depth = 0
        self.outcome: Outcome | None = None
        self.summary = ""
        self.text: _Text | None = None  # the outcome element's text, while inside it

    def start(self, tag: str, attributes: dict[str, str]) -> None:
        self.calls += 1
        self.depth += 1
        self.elements += 1
        if self.depth > DEPTH_MAX:
            raise JUnitError(f"{self.name} nests elements deeper than {DEPTH_MAX}")
        if self.elements > ELEMENTS_MAX:
            raise JUnitError(f"{self.name} has more than {ELEMENTS_MAX} elements")
        if not self.root:
            self.root = tag
            if tag not in ("testsuites", "testsuite"):
                raise JUnitError(f"{self.name} is not JUnit XML (its root element is <{tag[:100]}>)")
        if tag == "testcase":
            if self.case is not None:
                raise JUnitError(f"{self.name} has a <testcase> inside a <testcase>")
            self.cases += 1
            if self.cases > RECORDS_MAX:
                raise JUnitError(f"{self.name} has more than {RECORDS_MAX} test cases")
            self.case = {key: attributes.get(key, "") for key in ("name", "classname", "time")}
            self.case_depth = self.depth
            self.outcome, self.summary, self.text = None, "", None
        elif self.case is not None and self.depth == self.case_depth + 1 and tag in OUTCOMES and self.outcome is None:
            self.outcome, self.summary, self.text = OUTCOMES[tag], attributes.get("message", ""), _Text()

    def end(self, tag: str) -> None:
        self.calls += 1
        if self.case is not None and self.depth == self.case_depth + 1 and self.text is not None and tag in OUTCOMES:
            self.summary = self._message()
            self.text = None
        elif self.case is not None and self.depth == self.case_depth:
            self._case_ends()
        self.depth -= 1

    def characters(self, data: str) -> None:
        self.calls += 1
        if self.text is not None:
            self.text.add(data)

    def other(self, *_: object) -> None:
        self.calls += 1

    def doctype(self, *_: object) -> None:
        raise JUnitError(f"{self.name} declares a DOCTYPE, which JUnit XML has not: it is not read")

    def _message(self) -> str:
        assert self.text is not None
        if not self.text.chars:
            return self.summary
        message, cut = self.text.message()
        if cut:
            self.keeper.cut.messages_shortened += 1
            self.keeper.cut.message_bytes_cut += cut
        return message or self.summary

    def _case_ends(self) -> None:
        case = self.case
        assert case is not None
        name, classname = case["name"], case["classname"]
        test_id = (f"{classname}.{name}" if classname else name) if name else (classname or "<unnamed>")
        duration = 0.0
        if case["time"]:
            found = seconds(_number(case["time"]))
            if found is None:
                self.keeper.cut.values_dropped += 1
            else:
                duration = round(found, 6)
        outcome = self.outcome or Outcome.PASSED
        message = self.summary if self.outcome is not None else ""
        self.keeper.add(TestResult(id=test_id, outcome=outcome, duration_s=duration, message=message,
                                   order=self.cases - 1))
        self.case, self.outcome, self.summary, self.text = None, None, "", None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse(source: BinaryIO, name: str) -> JUnitResults:
    """The tests of a JUnit file, read from `source` in chunks (see the module's docstring)."""
    reader = _Reader(name)
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.characters
    parser.StartDoctypeDeclHandler = reader.doctype
    parser.EntityDeclHandler = reader.doctype
    parser.CommentHandler = reader.other
    parser.ProcessingInstructionHandler = reader.other
    parser.StartCdataSectionHandler = reader.other
    parser.EndCdataSectionHandler = reader.other
    total = 0
    quiet = 0  # bytes fed since a handler was last called
    try:
        while True:
            chunk = source.read(CHUNK)
            total += len(chunk)
            if total > FILE_MAX:
                raise JUnitError(f"{name} is larger than {FILE_MAX // (1024 * 1024)} MiB")
            calls = reader.calls
            parser.Parse(chunk, not chunk)
            quiet = 0 if reader.calls != calls else quiet + len(chunk)
            if quiet > TOKEN_MAX:
                raise JUnitError(f"{name} has a tag, attribute or comment larger than {TOKEN_MAX // (1024 * 1024)} MiB")
            if not chunk:
                break
    except expat.ExpatError as exc:
        raise JUnitError(f"{name} is not well-formed XML: {expat.ErrorString(exc.code)}: line {exc.lineno}, "
                         f"column {exc.offset}") from None
    if not reader.root:
        raise JUnitError(f"{name} is not JUnit XML (it has no element)")
    tests, cut = reader.keeper.done()
    return JUnitResults(tests, Counts.of(tests) + cut.counts, cut)
