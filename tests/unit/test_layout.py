"""The layout rules of rserver/src: files call each other without cycles, and
no file but server.c reaches into server.c."""

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


def test_the_files_of_rserver_src_call_each_other_without_cycles():
    graph = call_graph()
    done: set[str] = set()

    def visit(file: str, path: list[str]) -> None:
        assert file not in path, "cycle: " + " -> ".join([*path, file])
        if file in done:
            return
        for callee in sorted(graph[file]):
            visit(callee, [*path, file])
        done.add(file)

    for file in sorted(graph):
        visit(file, [])
    assert "request.c" in graph["server.c"]          # the graph was read at all


def test_no_file_calls_into_server_c():
    graph = call_graph()
    assert [f for f, callees in graph.items() if "server.c" in callees] == []
