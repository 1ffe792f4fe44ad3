"""What an installer copies to a host must be closed under its imports: every module_utils module it imports is
copied too, and nothing imports Ansible (the host runs it without Ansible)."""

from __future__ import annotations

import ast

PKG = "ansible_collections.netfleet.calico.plugins.module_utils"


def assert_closed_under_imports(modules, source_of):
    shipped = {m.__name__.rsplit(".", 1)[-1] for m in modules}
    for mod in modules:
        for node in ast.walk(ast.parse(source_of(mod))):
            if isinstance(node, ast.ImportFrom) and node.module == PKG:
                assert {a.name for a in node.names} <= shipped, mod.__name__
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PKG + "."):
                assert node.module.rsplit(".", 1)[-1] in shipped, mod.__name__
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                name = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                assert not (name or "").startswith("ansible"), f"{mod.__name__} imports {name}"
