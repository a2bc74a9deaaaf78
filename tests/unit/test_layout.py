"""Layout rules: the files of rserver/src call each other without cycles, and
no file but server.c reaches into server.c; the modules of bridge/ import
each other without cycles."""

from __future__ import annotations

import re

from helpers import ROOT

SRC = ROOT / "rserver" / "src"
DEFINITION = re.compile(r"^[A-Za-z_][\w \*]*?\b(rb_\w+)\([^;]*$", re.M)
CALL = re.compile(r"\b(rb_\w+)\(")


def call_graph() -> dict[str, set[str]]:
    sources = {p.name: p.read_text() for p in SRC.glob("*.c")}
    defined = {name: file for file, text in sources.items() for name in DEFINITION.findall(text)}
    return {file: {defined[c] for c in CALL.findall(text) if c in defined and defined[c] != file}
            for file, text in sources.items()}


def assert_acyclic(graph: dict[str, set[str]]) -> None:
    """Fails naming the first cycle of a dependency graph, if it has one."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        assert node not in path, "cycle: " + " -> ".join([*path, node])
        if node in done:
            return
        for dependency in sorted(graph[node]):
            visit(dependency, [*path, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])


def test_the_files_of_rserver_src_call_each_other_without_cycles():
    graph = call_graph()
    assert_acyclic(graph)
    assert "request.c" in graph["server.c"]          # the graph was read at all


def test_no_file_calls_into_server_c():
    graph = call_graph()
    assert [f for f, callees in graph.items() if "server.c" in callees] == []


def import_graph() -> dict[str, set[str]]:
    """bridge/'s modules and the modules of bridge/ each imports, type-only
    imports included."""
    package = ROOT / "bridge"
    modules = {p.stem for p in package.glob("*.py")}
    relative = re.compile(r"^\s*from \.(\w+) import", re.M)      # from ._x import ...
    package_level = re.compile(r"^\s*from \. import ([\w, ]+)", re.M)   # from . import _x, _y
    graph = {}
    for path in package.glob("*.py"):
        text = path.read_text()
        found = set(relative.findall(text))
        for names in package_level.findall(text):
            found |= {n.strip() for n in names.split(",")}
        graph[path.stem] = found & modules - {path.stem}
    return graph


def test_the_modules_of_bridge_import_each_other_without_cycles():
    graph = import_graph()
    assert_acyclic(graph)
    assert "_proxies" in graph["_session"] and "_protocol" in graph["_transport"]   # read at all
    assert "_session" not in graph["_proxies"]    # proxies depend on the Owner interface only
