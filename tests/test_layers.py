"""The layers the README draws, checked against the code: every module imports only from its own layer
or the layers below it (read from the source with ast; nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

from support import ROOT

# Lowest first. A module is in the layer of the longest prefix that names it. The records' layer holds
# the pure policies too (the dispatch order, culprit finding): functions of records, used by the store.
LAYERS: list[tuple[str, set[str]]] = [
    ("records", {"voltci", "voltci.clock", "voltci.errors", "voltci.sizes", "voltci.keys", "voltci.models",
                 "voltci.config", "voltci.connection", "voltci.failover", "voltci.git", "voltci.locks", "voltci.outage",
                 "voltci.redis_server", "voltci.dispatch", "voltci.bisect", "voltci.forge", "voltci.pulls",
                 "voltci.links", "voltci.commitstatus"}),
    ("rq", {"voltci.jobqueue"}),
    ("store", {"voltci.store"}),
    ("runner", {"voltci.runner", "voltci.worker", "voltci.heartbeat", "voltci.logstream"}),
    ("dispatch", {"voltci.observer", "voltci.requeue", "voltci.watchlist", "voltci.scheduler", "voltci.webhooks",
                  "voltci.pullrequests", "voltci.statuses", "voltci.forgeapi", "voltci.leading"}),
    ("people", {"voltci.cli", "voltci.up", "voltci.live", "voltci.report", "voltci.web", "voltci.web_server",
                "voltci.example", "voltci.humantime", "voltci.testhistory", "voltci.metrics", "voltci.terminal",
                "voltci.__main__"}),
]


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for number, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            names_it = module == prefix or (module.startswith(prefix + ".") and prefix != "voltci")
            if names_it and (best is None or len(prefix) > best[0]):
                best = (len(prefix), number)
    return best[1] if best else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("voltci")}


def test_every_module_has_a_layer() -> None:
    homeless = [module_name(p) for p in (ROOT / "voltci").rglob("*.py") if layer_of(module_name(p)) is None]
    assert homeless == [], "modules the README's layers do not place"


def test_imports_point_down_or_sideways_only() -> None:
    upward = []
    for path in (ROOT / "voltci").rglob("*.py"):
        here = module_name(path)
        mine = layer_of(here)
        assert mine is not None
        for imported in imports_of(path):
            theirs = layer_of(imported)
            if theirs is not None and theirs > mine and not imported.startswith(here):
                upward.append(f"{here} ({LAYERS[mine][0]}) imports {imported} ({LAYERS[theirs][0]})")
    assert upward == []


def test_the_files_volt_runs_inside_a_build_import_nothing_of_volt() -> None:
    """The collectors and the wheel builder run under the build's own Python, which has no Volt."""
    from voltci.runner.sandbox import VOLT_SCRIPTS

    assert {path.name for path in VOLT_SCRIPTS} == {"collector.py", "pytest_collector.py", "wheel_builder.py"}
    assert {path.name: imports_of(path) for path in VOLT_SCRIPTS} == {path.name: set() for path in VOLT_SCRIPTS}
