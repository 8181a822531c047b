"""The README and docs/ stay true of the code: the test command is what CI runs, every command, flag,
setting, `.volt.toml` key, route, metric and path they name exists, each of those is documented, and the
layout listing and the layers' picture in docs/architecture.md match the files and tests/test_layers.py.

Nothing here imports more than Volt's own modules; no process starts and no Redis is reached."""

from __future__ import annotations

import re
from dataclasses import fields

import click
import fakeredis
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry
from support import ROOT

from voltci import report
from voltci.cli import cli, observe
from voltci.config import Settings
from voltci.models import Attempt, AttemptState, Build, Outcome, Shard, Status, TestResult

DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_BYTES = 12 * 1024
COMMON_FLAGS = {"--config", "--redis-url", "--help", "-h"}
TOP_LEVEL_FLAGS = {"--version", "--help", "-h"}


def doc(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def pages() -> dict[str, str]:
    found = {path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8") for path in DOCS.rglob("*.md")}
    found["README.md"] = README.read_text(encoding="utf-8")
    return found


def section(text: str, heading: str) -> str:
    """The text under `heading` (a whole line, like "## Layout"), up to the next heading of its level."""
    level = heading.split(" ", 1)[0]
    parts = re.split(rf"^{re.escape(heading)}\n", text, flags=re.MULTILINE)
    assert len(parts) == 2, f"one section {heading!r}"
    return re.split(rf"^{level} ", parts[1], maxsplit=1, flags=re.MULTILINE)[0]


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)\n```", text, flags=re.MULTILINE | re.DOTALL)


def code_spans(text: str) -> list[str]:
    """Inline code spans and the lines of shell blocks (what a reader would type)."""
    blocks = fenced(text, "sh")
    prose = re.sub(r"^```\w*\n.*?\n```", "", text, flags=re.MULTILINE | re.DOTALL)
    return [*re.findall(r"`([^`\n]+)`", prose), *(line for block in blocks for line in block.splitlines())]


def table_rows(text: str) -> list[list[str]]:
    """The cells of a Markdown table's rows, header and rule left out."""
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[2:]]


# ---------------------------------------------------------------- the test command and the README


def test_ci_runs_the_readme_test_command() -> None:
    readme = README.read_text(encoding="utf-8")
    commands = fenced(section(readme, "## Tests"), "sh")
    assert len(commands) == 1, "the README's Tests section is one command"
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[0] in ci, ".ci/run must run the README's test command, as it is"
    assert commands[0] in fenced(doc("development.md"), "sh"), "Working on Volt shows the same command"
    assert "mkdocs build --strict" in ci, ".ci/run builds the docs, strictly"
    assert not re.search(r"mkdocs build.*(-q\b|--quiet)", ci), "--quiet hides the warnings --strict counts"


def test_the_quick_start_starts_volt_up() -> None:
    quick_start = section(README.read_text(encoding="utf-8"), "## Quick start")
    first = fenced(quick_start, "sh")[0]
    assert first.endswith(".venv/bin/volt up"), "the quick start's first command starts Volt"
    assert "VOLT_REDIS_URL" in quick_start, "the second terminal reaches volt up's Redis"


def test_the_readme_is_a_front_door() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes: move the rest to docs/"


def test_the_readme_links_every_page_of_the_docs() -> None:
    readme = README.read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\((docs/[\w./-]+\.md)\)", readme))
    present = {path.relative_to(ROOT).as_posix() for path in DOCS.glob("*.md")}
    assert linked <= present, "the README links pages that are not there"
    assert present - linked == set(), "pages the README does not point to"


# ---------------------------------------------------------------- commands


def commands() -> dict[str, click.Command]:
    found = dict(cli.commands)
    found["observe"] = observe
    return found


def flags_of(command: click.Command) -> set[str]:
    return {opt for param in command.params if isinstance(param, click.Option)
            for opt in (*param.opts, *param.secondary_opts)}


def flags_in(text: str) -> set[str]:
    return {match.rstrip(".") for match in re.findall(r"(?<![\w/.-])(--?[a-zA-Z][\w-]*)", text)}


def test_every_command_has_its_section_with_exactly_its_flags() -> None:
    reference = doc("commands.md")
    for name, command in commands().items():
        usage = fenced(section(reference, f"## `volt {name}`"), "text")[0]
        assert usage.startswith(f"volt {name}"), f"the usage of volt {name} starts with its name"
        shown, has = flags_in(usage), flags_of(command) - COMMON_FLAGS
        assert shown - has == set(), f"volt {name}'s usage shows flags it does not take"
        missing = [param.opts for param in command.params
                   if isinstance(param, click.Option) and not set(param.opts) & (shown | COMMON_FLAGS)]
        assert missing == [], f"volt {name}'s usage leaves out flags it takes"
    documented = set(re.findall(r"^## `volt ([\w-]+)`$", reference, flags=re.MULTILINE))
    assert documented == set(commands()), "sections of commands.md and the commands of volt differ"


VOLT_LINE = re.compile(r"(?<![\w-])volt(?:(-observe)|\s+([\w-]+))((?:\s+[^\s#|;&`]+)*)")


def test_every_volt_command_line_in_the_docs_exists() -> None:
    known = commands()
    wrong = []
    for page, text in pages().items():
        for span in code_spans(text):
            for observer, name, rest in VOLT_LINE.findall(span):
                if observer:
                    name = "observe"
                words = rest.split()
                if name.startswith("-"):
                    bad = flags_in(name + " " + rest) - TOP_LEVEL_FLAGS
                    wrong += [f"{page}: volt {flag}" for flag in sorted(bad)]
                    continue
                if name not in known:
                    wrong.append(f"{page}: volt {name} (no such command), in {span!r}")
                    continue
                # the flags of this command line only, up to a next command on the same line
                own = " ".join(words[:next((i for i, w in enumerate(words) if w in ("volt", "rq")), len(words))])
                bad = flags_in(own) - flags_of(known[name]) - COMMON_FLAGS
                wrong += [f"{page}: volt {name} {flag}, in {span!r}" for flag in sorted(bad)]
    assert wrong == []


# ---------------------------------------------------------------- settings and .volt.toml


def test_every_setting_is_in_the_configuration_reference_and_config_file() -> None:
    rows = table_rows(section(doc("configuration.md"), "## Every setting"))
    documented = {row[0].strip("`"): row[1].strip("`") for row in rows}
    names = {f.name for f in fields(Settings)}
    assert set(documented) == names, "the configuration table and Settings differ"
    assert {name: f"VOLT_{name.upper()}" for name in names} == documented, "each setting's variable"
    config = (ROOT / "config" / "volt.toml").read_text()
    assert [name for name in sorted(names) if not re.search(rf"^# {name} = ", config, re.MULTILINE)] == []


def test_every_volt_toml_key_is_in_its_reference() -> None:
    from voltci.runner import matrix, project

    rows = table_rows(section(doc("volt-toml.md"), "### Every key"))
    documented = {row[0].strip("`") for row in rows}
    tables = {"tests": project.TEST_KEYS, "setup": project.SETUP_KEYS, "matrix": matrix.KEYS}
    keys = {key for key in project.TOP_KEYS if key not in tables}
    keys |= {f"{table}.{key}" for table, known in tables.items() for key in known}
    assert documented == keys


# ---------------------------------------------------------------- the web page, metrics, the JSON report


def documented_route(text: str) -> str:
    """`/repo/NAME/test/TEST_ID?x=y` as a route pattern: `/repo/<>/test/<>`."""
    path = re.split(r"[?\[]", text, maxsplit=1)[0]
    path = re.sub(r"\.svg$", "", path)
    return re.sub(r"[A-Z][A-Z_]*", "<>", path).rstrip("/")


def test_every_route_of_the_web_app_is_on_the_web_page_doc() -> None:
    from voltci.web.app import create_app

    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0"))  # never reached: only its routes are read
    routes = {re.sub(r"<[^>]+>", "<>", rule.rule).rstrip("/").removesuffix(".svg") for rule in app.url_map.iter_rules()
              if not rule.rule.startswith(("/rq/", "/static/"))}
    paths = [span.split()[-1] for span in code_spans(doc("web.md")) if span.split()]
    shown = {documented_route(path) for path in paths  # `/api/` and `/rq/` are where many routes start
             if path.startswith("/") and (path == "/" or not path.endswith("/")) and not path.startswith("/rq")}
    assert routes - shown == set(), "routes the web page doc does not name"
    assert shown - routes == set(), "routes the web page doc names that the app does not have"


def test_every_metric_is_documented() -> None:
    from voltci.metrics import VoltCollector
    from voltci.store import Store

    registry = CollectorRegistry()
    registry.register(VoltCollector(Store(fakeredis.FakeRedis(decode_responses=True), Settings())))
    served = set(re.findall(r"^# TYPE (\w+) ", generate_latest(registry).decode(), flags=re.MULTILINE))
    served = {f"{name}_total" if name in ("volt_builds", "volt_lost_attempts") else name for name in served}
    documented = {row[0].strip("`") for row in table_rows(doc("metrics.md"))}
    assert documented == served


def test_the_json_report_shows_every_key() -> None:
    build = Build("r-" + "a" * 40, "r", "/r", "a" * 40, "main", status=Status.FAILED)
    tests = [TestResult("t.T.test_x", Outcome.FLAKY, subtest_of="t.T", leg="py3.12")]
    leg = Build("r-leg", "r", "/r", "a" * 40, "main")
    data = report.as_dict(build, tests, [Attempt(1, AttemptState.FINISHED)], [Shard(0)], [leg])
    sample = fenced(section(doc("commands.md"), "## The JSON report"), "json")[0]
    prose = section(doc("commands.md"), "## The JSON report")
    named = set(re.findall(r'"(\w+)":', sample)) | set(re.findall(r"`(\w+)`", prose))
    keys = set(data) | set(data["counts"]) | set(data["cut"]) | set(data["tests"][0]) | set(data["legs"][0])
    keys |= set(data["shards"][0]) | set(data["attempt_history"][0])
    assert keys - named == set()


# ---------------------------------------------------------------- paths, the layout, the layers


def test_every_path_the_docs_name_exists() -> None:
    missing = []
    files = {path.name for path in ROOT.rglob("*.py") if ".venv" not in path.parts}
    for page, text in pages().items():
        for span in code_spans(text):
            for word in re.findall(r"^((?:voltci|tests|bench|config|bin|docs|\.ci)/[\w./@-]*)$", span):
                if not (ROOT / word).exists():
                    missing.append(f"{page}: {word}")
            for word in re.findall(r"^((?:runner|store|web)/[\w./-]+)$", span):
                if not (ROOT / "voltci" / word).exists():
                    missing.append(f"{page}: {word}")
            if page == "docs/architecture.md" and re.fullmatch(r"\w+\.py", span) and span not in files:
                missing.append(f"{page}: {span}")
    assert missing == []


NAME = re.compile(r"[\w.@-]+\.(?:py|toml|md|service|env)|[\w-]+/|volt-observe")


def listed(block: str) -> tuple[set[str], set[str]]:
    """The files and directories a layout listing names, as paths: a line's leading names (up to the
    first word that is no file or directory name) are in the directory opened by the nearest line
    above it that is indented less and starts with a directory; a line that starts with one opens it."""
    files: set[str] = set()
    dirs: set[str] = set()
    stack: list[tuple[int, str]] = []  # (indent, path)
    for line in block.splitlines():
        words = line.split()
        names = []
        for word in words:
            if not NAME.fullmatch(word):
                break
            names.append(word)
        if not names:
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        here = stack[-1][1] if stack else ""
        if names[0].endswith("/"):
            opened = here + names[0]
            dirs.add(opened.rstrip("/"))
            stack.append((indent, opened))
            here, names = opened, names[1:]
        for name in names:
            (dirs if name.endswith("/") else files).add((here + name).rstrip("/"))
    return files, dirs


def test_the_layout_listing_names_every_module_and_nothing_else() -> None:
    block = fenced(section(doc("architecture.md"), "## Layout"), "text")[0]
    files, dirs = listed(block)
    modules = {path.relative_to(ROOT).as_posix() for path in (ROOT / "voltci").rglob("*.py")}
    assert modules - files == set(), "modules of voltci/ the layout does not name"
    assert [name for name in sorted(files) if not (ROOT / name).is_file()] == [], "named, but not there"
    assert [name for name in sorted(dirs) if not (ROOT / name).is_dir()] == [], "directories named, but not there"


def test_the_layers_picture_is_the_layers_test() -> None:
    from test_layers import LAYERS

    block = fenced(section(doc("architecture.md"), "## The layers"), "text")[0]
    drawn: dict[str, set[str]] = {}
    layer = ""
    for line in block.splitlines():
        words = line.split()
        if line.startswith(" ") and not line.startswith("  ") and words:
            layer, words = words[0], words[1:]
        for word in words:
            if not NAME.fullmatch(word):
                break
            drawn.setdefault(layer, set()).add("voltci." + word.removesuffix(".py").rstrip("/"))
    held = {name: prefixes - {"voltci"} for name, prefixes in LAYERS}
    assert drawn == held
