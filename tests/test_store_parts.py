"""The store as parts it holds: each part a class of its own module that inherits from no other, holds
the client and the parts it was handed, and calls nothing it does not hold (read from the source with
ast, as test_layers.py reads imports); and the Store wires each part to the others' one instance."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import fakeredis
import pytest
from support import ROOT

from voltci.config import Settings
from voltci.store import Store

STORE = ROOT / "voltci" / "store"
PARTS = ("records", "repos", "history", "trail", "pushes", "queue", "legs", "builds", "shards", "logs", "runners",
         "outbox", "statuses", "hooks", "pulls", "metrics", "retention", "usage")
# What each part is handed, besides the client (and the settings, where its writes follow them).
HANDED = {"history": {"records", "repos"}, "trail": {"records"}, "pushes": {"records"},
          "queue": {"records", "repos", "pushes"}, "legs": {"trail", "queue"},
          "builds": {"records", "legs", "trail", "queue"},
          "shards": {"records", "builds", "legs", "trail", "queue"},
          "pulls": {"records", "repos", "builds", "queue"},
          "retention": {"records", "repos"}, "usage": {"records"}}


def classes() -> list[tuple[Path, ast.ClassDef]]:
    return [(path, node) for path in sorted(STORE.glob("*.py"))
            for node in ast.parse(path.read_text(encoding="utf-8")).body if isinstance(node, ast.ClassDef)]


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


@pytest.fixture
def store() -> Store:
    return Store(fakeredis.FakeRedis(decode_responses=True), Settings())


def test_each_part_is_a_class_of_its_own_module_named_for_it(store: Store) -> None:
    for name in PARTS:
        part = getattr(store, name)
        assert type(part).__name__.lower() == name and Path(inspect.getfile(type(part))).stem == name
        assert part.r is store.r  # one client, the store's
    assert [name for name in vars(store) if name not in ("r", "settings")] == list(PARTS)


def test_no_class_of_the_store_inherits_from_another_and_none_waits_for_a_subclass() -> None:
    own = {node.name for _, node in classes()}
    inherited = [f"{path.name}: {node.name}({ast.unparse(base)})" for path, node in classes() for base in node.bases
                 if ast.unparse(base).split(".")[-1] in own]
    assert inherited == [], "parts are held and handed, never inherited"
    waiting = [path.name for path in STORE.glob("*.py") for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Raise) and "NotImplementedError" in ast.unparse(node)]
    assert waiting == [], "no part leaves a method for another to define"


def test_a_part_calls_only_what_it_defines_or_holds() -> None:
    """Every `self.x` a class of the store reads is its own method or property, or an attribute its
    __init__ sets: nothing is defined in one file and called from another through inheritance."""
    strangers = []
    for path, node in classes():
        defined = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
        defined |= {item.target.id for item in node.body  # a dataclass's fields
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)}
        defined |= {target.attr for item in ast.walk(node) if isinstance(item, (ast.Assign, ast.AnnAssign))
                    for target in ast.walk(item.targets[0] if isinstance(item, ast.Assign) else item.target)
                    if isinstance(target, ast.Attribute) and _is_self(target.value)}
        used = {item.attr for item in ast.walk(node) if isinstance(item, ast.Attribute) and _is_self(item.value)}
        strangers += [f"{path.name}: {node.name}.{name}" for name in sorted(used - defined)]
    assert strangers == []


def test_each_part_is_handed_the_stores_own_parts_it_calls(store: Store) -> None:
    for name in PARTS:
        part = getattr(store, name)
        held = {attr for attr, value in vars(part).items() if value is not None and attr in PARTS}
        assert held == HANDED.get(name, set()), name
        for attr in held:
            assert getattr(part, attr) is getattr(store, attr), f"{name}.{attr} is not the store's {attr}"
    for name in ("queue", "legs", "builds", "shards"):
        assert getattr(store, name).settings is store.settings


def test_a_part_stands_alone_with_what_it_is_handed() -> None:
    """A part is made from a client and the parts its constructor names, nothing else: the store's
    wiring is its only glue (here, two stores' parts on one server share nothing but Redis)."""
    server = fakeredis.FakeServer()
    first = Store(fakeredis.FakeRedis(server=server, decode_responses=True))
    second = Store(fakeredis.FakeRedis(server=server, decode_responses=True))
    first.repos.register("proj", "/r", ["main"])
    assert second.repos.known() == {"proj": {"url": "/r", "branches": ["main"], "priority": "normal"}}
    assert first.builds.queue is not second.builds.queue
