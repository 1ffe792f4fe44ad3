"""The planner's layers: plugin_utils modules import each other in one direction only (no cycle), never a filter;
filters are thin wrappers that import plugin_utils (and module_utils), never another filter nor a private helper."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "plugins"
PKG = "ansible_collections.netfleet.calico.plugins."


def imports(path):
    """(module names imported from this collection, private attributes used on them) of one file."""
    tree = ast.parse(path.read_text())
    found, aliases, private = set(), {}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PKG):
            for alias in node.names:
                target = node.module + "." + alias.name
                name = target if (ROOT / (target[len(PKG):].replace(".", "/") + ".py")).exists() else node.module
                found.add(name[len(PKG):])
                aliases[alias.asname or alias.name] = name
                if alias.name.startswith("_"):
                    private.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                and node.attr.startswith("_") and not node.attr.startswith("__"):
            private.add(f"{aliases[node.value.id]}.{node.attr}")
    return found, private


def test_plugin_utils_have_no_cycle_and_no_filter():
    graph = {}
    for path in sorted((ROOT / "plugin_utils").glob("*.py")):
        found, _private = imports(path)
        assert not [m for m in found if m.startswith("filter.")], path.name
        graph["plugin_utils." + path.stem] = {m for m in found if m.startswith("plugin_utils.")}

    def visit(node, trail):
        assert node not in trail, "import cycle: " + " -> ".join(trail + [node])
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, trail + [node])
    for node in graph:
        visit(node, [])


def test_filters_import_no_filter_and_no_private_helper():
    for path in sorted((ROOT / "filter").glob("*.py")):
        found, private = imports(path)
        assert not [m for m in found if m.startswith("filter.")], f"{path.name} imports a filter"
        assert not private, f"{path.name} uses private helpers: {sorted(private)}"
