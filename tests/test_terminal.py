"""What a build prints never drives the terminal of whoever reads it: `volt log`, `volt report`,
`volt history`, `volt test-history` print a hostile build's output, test ids, messages and subject
with every control sequence taken out but newline and tab, and bidi controls shown; `--json` keeps the
text exactly (escaped by JSON) and `--junit` stays valid XML.

The first tests are terminal.clean on its own; the last builds a real commit with real processes."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest
from support import run_rq_worker_burst, run_volt

from voltci import terminal
from voltci.terminal import Cleaner, clean

# Every character a terminal may act on, but newline and tab: C0, DEL, C1, and the bidi controls that
# must be shown rather than obeyed.
FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")

ATTACKS = {
    "title (OSC 0, BEL)": "\x1b]0;owned\x07",
    "clipboard (OSC 52, ST)": "\x1b]52;c;ZWNobyBvd25lZA==\x1b\\",
    "hyperlink (OSC 8)": "\x1b]8;;https://evil.invalid/\x1b\\click\x1b]8;;\x1b\\",
    "colour and cursor (CSI)": "\x1b[31m\x1b[1A\x1b[2K\x1b[?25l",
    "device report request (CSI 6n)": "\x1b[6n",
    "DCS request": "\x1bP$qm\x1b\\",
    "APC / PM / SOS": "\x1b_apc\x1b\\\x1b^pm\x1b\\\x1bXsos\x1b\\",
    "reset (ESC c)": "\x1bc",
    "charset switch (ESC ( 0)": "\x1b(0",
    "8-bit CSI": "\x9b31m",
    "8-bit OSC, ST": "\x9d0;owned\x9c",
    "8-bit DCS": "\x90q\x9c",
    "carriage return": "FAILED\rpassed",
    "backspace, bell, NUL, DEL, form feed": "a\x08\x07\x00\x7f\x0cb",
    "lone escape": "\x1b",
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_control_sequence_is_taken_out(name: str) -> None:
    cleaned = clean(f"before {ATTACKS[name]}\nafter\n\tnext")
    assert not FORBIDDEN.search(cleaned), repr(cleaned)
    assert cleaned.startswith("before ") and cleaned.endswith("\nafter\n\tnext")


def test_sequences_go_whole_and_text_stays() -> None:
    assert clean("\x1b[1;31mFAIL\x1b[0m: x") == "FAIL: x"
    assert clean("\x1b]0;owned\x07title stays") == "title stays"
    assert clean("a\x1b]8;;https://evil.invalid/\x1b\\link\x1b]8;;\x1b\\b") == "alinkb"
    assert clean("line\r\nnext\r\n") == "line\nnext\n"
    assert clean("plain text, tabs\tand\nnewlines") == "plain text, tabs\tand\nnewlines"
    assert clean("naïve – “quotes” ✓ 中文") == "naïve – “quotes” ✓ 中文"  # non-ASCII text is not a control


def test_an_unterminated_string_ends_at_the_line() -> None:
    """A terminal would swallow the rest; here only the rest of that line goes, never the lines after."""
    assert clean("x \x1b]0;never ended\nFAILED: test_a\n") == "x \nFAILED: test_a\n"


def test_bidi_controls_are_shown_not_obeyed() -> None:
    """Trojan Source: text that reads in another order than it is stored."""
    assert clean("access = 'user\u202e \u2066// admin\u2069 \u2066'") == \
        "access = 'user<U+202E> <U+2066>// admin<U+2069> <U+2066>'"
    assert clean("\u200f\u061c") == "<U+200F><U+061C>"


def test_a_sequence_cut_between_pieces_is_cleaned_whole() -> None:
    whole = "ok \x1b]0;owned title\x07 then \x1b[31mred\x1b[0m and \x9d8;;x\x9c\n"
    for cut in range(1, len(whole)):
        cleaner = Cleaner()
        out = cleaner.feed(whole[:cut]) + cleaner.feed(whole[cut:]) + cleaner.flush()
        assert out == clean(whole) == "ok  then red and \n", (cut, out)


def test_a_cleaner_holds_back_little() -> None:
    cleaner = Cleaner()
    assert cleaner.feed("a" + "\x1b]0;" + "x" * (terminal.HOLD_MAX + 10)) == "a"  # too long to hold: cleaned
    assert cleaner.feed("b\x1b[3") == "b"  # held …
    assert cleaner.feed("1mc") == "c"      # … and taken out whole
    assert cleaner.feed("d\x1b") == "d"
    assert cleaner.flush() == ""


def test_log_lines_are_cleaned(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    record = logging.LogRecord("volt.observer", logging.INFO, __file__, 1, "queued %s", ("\x1b]0;owned\x07subject",),
                               None)
    assert terminal.CleanFormatter("%(message)s").format(record) == "queued subject"


# ---------------------------------------------------------------- a real build

PAYLOAD = "".join(ATTACKS.values()) + "\u202eevil\u202c"
HOSTILE_TESTS = {
    "tests/__init__.py": "",
    "tests/test_hostile.py": (
        "import sys\nimport unittest\n\nPAYLOAD = " + ascii(PAYLOAD) + "\n\n\n"
        "class Hostile(unittest.TestCase):\n"
        "    def test_prints_and_fails(self):\n"
        "        print('visible-output ' + PAYLOAD, flush=True)\n"
        "        sys.stdout.buffer.write(b'raw bytes \\x9b31m \\x1b]0;owned\\x07 end\\n')\n"
        "        sys.stdout.flush()\n"
        "        self.fail('visible-message ' + PAYLOAD)\n\n"
        "    def test_id_carries_it(self):\n"
        "        with self.subTest('sub ' + PAYLOAD):\n"
        "            raise RuntimeError('visible-error ' + PAYLOAD)\n\n"
        "    def test_fine(self):\n"
        "        pass\n"
    ),
}


@pytest.fixture
def hostile_build(settings, make_repo):
    """A commit whose subject, test output, test ids and failure messages carry every control sequence,
    built by real processes (observer, rq worker, the sandboxed test run)."""
    repo = make_repo()
    sha = repo.commit(HOSTILE_TESTS, "hostile \x1b]0;owned\x07subject\x1b[2K\u202eevil")
    observed = run_volt("observe", "--once", "--repo", str(repo.path), "--redis-url", settings.effective_redis_url,
                        env={"VOLT_WORKSPACE_DIR": settings.workspace_dir})
    assert observed.returncode == 0, observed.stderr
    assert not FORBIDDEN.search(observed.stdout + observed.stderr)  # `queued … <subject>` is cleaned too
    burst = run_rq_worker_burst(settings)
    assert burst.returncode == 0, burst.stderr
    return sha


def volt_bytes(settings, *args: str) -> tuple[int, str]:
    """A `volt` command's exit status and stdout + stderr, checked to be UTF-8 with no control but \\n and \\t."""
    proc = run_volt(*args, "--redis-url", settings.effective_redis_url)
    out = proc.stdout + proc.stderr
    found = FORBIDDEN.search(out)
    assert found is None, f"volt {' '.join(args)} printed {found.group()!r}: {out[max(0, found.start() - 80):][:200]!r}"
    return proc.returncode, out


def test_log_and_report_of_a_hostile_build_print_no_control(settings, hostile_build, tmp_path) -> None:
    sha = hostile_build
    status, log = volt_bytes(settings, "log", sha)
    assert status == 0 and "visible-output " in log and "raw bytes" in log and " end\n" in log
    assert "<U+202E>evil<U+202C>" in log  # bidi shown
    status, follow = volt_bytes(settings, "log", "-f", sha)
    assert status == 1 and "visible-output " in follow and "build failed" in follow

    status, text = volt_bytes(settings, "report", sha)
    assert status == 1
    assert "hostile subject<U+202E>evil" in text.splitlines()[0]
    assert "visible-message " in text and "visible-error " in text
    assert "test_id_carries_it [sub " in text  # the test id, cleaned
    assert "FAILEDpassed" in text  # the carriage return is gone: nothing was overwritten

    status, history = volt_bytes(settings, "history")
    assert "hostile subject" in history
    status, trail = volt_bytes(settings, "test-history", "proj", "tests.test_hostile.Hostile.test_prints_and_fails")
    assert status == 0 and "visible-message" in trail

    status, raw = volt_bytes(settings, "report", "--json", sha)  # JSON escapes every control: kept exactly
    report = json.loads(raw[:raw.rindex("}") + 1])
    assert report["subject"] == "hostile \x1b]0;owned\x07subject\x1b[2K\u202eevil"
    messages = {t["id"]: t.get("message", "") for t in report["tests"]}
    assert PAYLOAD in messages["tests.test_hostile.Hostile.test_prints_and_fails"]

    junit = tmp_path / "junit.xml"
    proc = run_volt("report", "--junit", str(junit), sha, "--redis-url", settings.effective_redis_url)
    assert proc.returncode == 1, proc.stderr
    text = junit.read_text(encoding="utf-8")
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]", text)  # XML 1.0's Char
    cases = {case.get("name"): case for case in ET.fromstring(junit.read_bytes()).iter("testcase")}
    assert "visible-message" in cases["test_prints_and_fails"].find("failure").text


def test_the_commands_print_only_through_the_cleaner() -> None:
    """cli.py and up.py print with terminal.echo; a bare click.echo or print there must print cleaned text."""
    import ast
    from pathlib import Path

    for name in ("cli.py", "up.py"):
        tree = ast.parse((Path(terminal.__file__).parent / name).read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = ast.unparse(node.func)
            if func in ("click.echo", "print", "sys.stdout.write", "sys.stderr.write"):
                first = ast.unparse(node.args[0]) if node.args else ""
                assert re.match(r"(clean|cleaner\.feed|cleaner\.flush)\(", first), \
                    f"{name}:{node.lineno}: {func}({first}) prints text that terminal.py has not cleaned"


def test_volt_up_prints_a_hostile_build_cleaned(make_repo, tmp_path) -> None:
    """`volt up --burst` (its own Redis, a runner, the observer) prints the build's line cleaned."""
    repo = make_repo()
    repo.commit(HOSTILE_TESTS, "up \x1b]0;owned\x07subject\x1b[1A\x1b[2K\u202eevil")
    proc = run_volt("up", "--burst", "--workers", "1", "--repo", str(repo.path),
                    env={"VOLT_WORKSPACE_DIR": str(tmp_path / "ws")}, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert not FORBIDDEN.search(out), repr(out)
    assert "up subject<U+202E>evil" in out and "failed" in out
