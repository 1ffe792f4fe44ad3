"""The planner's layers: plugin_utils modules import each other in one direction only (no cycle), never a filter;
filters are thin wrappers that import plugin_utils (and module_utils), never another filter nor a private helper.
The lab's module lab_fabric imports its module_utils, which never import a module and have no cycle."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "plugins"
PKG = "ansible_collections.netfleet.calico.plugins."


def imports(path, root=ROOT, pkg=PKG):
    """(module names imported from the collection of ``root`` and ``pkg``, private attributes used on them)
    of one file."""
    tree = ast.parse(path.read_text())
    found, aliases, private = set(), {}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(pkg):
            for alias in node.names:
                target = node.module + "." + alias.name
                name = target if (root / (target[len(pkg):].replace(".", "/") + ".py")).exists() else node.module
                found.add(name[len(pkg):])
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
    assert_no_cycle(graph)


def assert_no_cycle(graph):
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


def test_actions_import_no_filter():
    """Action plugins run on the controller: they use plugin_utils and module_utils, never a filter."""
    paths = sorted((ROOT / "action").glob("*.py"))
    assert paths
    for path in paths:
        found, _private = imports(path)
        assert found and not [m for m in found if m.startswith(("filter.", "action.", "modules."))], path.name


LAB = Path(__file__).resolve().parents[2] / "lab" / "plugins"
LAB_PKG = "ansible_collections.netfleet.calico_lab.plugins."


def test_lab_module_utils_import_one_way():
    """The lab's modules import its module_utils, never the reverse, and module_utils have no cycle
    (lab_fabric: fabric_apply -> fabric_plan -> fabric_spec)."""
    graph = {}
    for path in sorted((LAB / "module_utils").glob("*.py")):
        found = imports(path, LAB, LAB_PKG)[0]
        assert not [m for m in found if not m.startswith("module_utils.")], f"{path.name} imports {sorted(found)}"
        graph["module_utils." + path.stem] = found
    assert_no_cycle(graph)
    module = imports(LAB / "modules" / "lab_fabric.py", LAB, LAB_PKG)[0]
    assert module == {"module_utils.fabric_apply", "module_utils.fabric_spec"}
    assert graph["module_utils.fabric_apply"] == {"module_utils.fabric_plan", "module_utils.fabric_spec"}
    assert graph["module_utils.fabric_plan"] == set() and graph["module_utils.fabric_spec"] == set()


def test_filter_files_load_without_the_planners_imports():
    """To find one filter, ansible-core imports every file of plugins/filter/ in each task's worker, on every host:
    loading them imports neither the inventory parsers (plugin_utils.inputs, with netaddr) nor any module_utils."""
    code = textwrap.dedent("""
        import importlib, pathlib, sys
        for path in sorted(pathlib.Path(sys.argv[1]).glob('*.py')):
            importlib.import_module('ansible_collections.netfleet.calico.plugins.filter.' + path.stem)
        heavy = ('netaddr', '.plugin_utils.inputs', '.calico.plugins.module_utils.')
        print(' '.join(sorted(m for m in sys.modules if m == 'netaddr' or any(h in m for h in heavy[1:]))))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "filter")], env=env, capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [], proc.stdout
