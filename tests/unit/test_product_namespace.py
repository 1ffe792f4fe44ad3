"""The product's namespace holds only what a fleet needs: the lab's plugins (modules lab_*, the filter lab_spec, the
connection netns) and playbooks are the collection netfleet.calico_lab (lab/), and nothing of the product imports
or uses it (the lab depends on the product, never the other way round)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB = "netfleet.calico_lab"
LAB_PLUGINS = {
    "module": {"lab_fabric", "lab_machines", "lab_ping_matrix", "lab_sshd"},
    "filter": {"lab_spec"},
    "connection": {"netns"},
}


def listed(kind, collection):
    """Short names of the plugins of one type that `ansible-doc -l` lists for a collection."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(["ansible-doc", "-t", kind, "-l", "--json", collection], capture_output=True, text=True,
                          cwd=REPO, env=env, check=True)
    names = json.loads(proc.stdout or "{}")
    return {name for name in names if name.startswith(collection + ".")}, names


@pytest.mark.parametrize("kind", sorted(LAB_PLUGINS))
def test_ansible_doc_lists_no_lab_plugin_in_the_product(kind):
    product, everything = listed(kind, "netfleet.calico")
    # the product has modules and filters (so ansible-doc did find the collection) and no connection plugin
    assert bool(product) == (kind != "connection"), sorted(product)
    assert not [name for name in everything if name.startswith(LAB + ".")], everything
    short = {name.split(".", 2)[2] for name in product}
    assert not short & LAB_PLUGINS[kind], f"lab {kind} plugins in netfleet.calico: {sorted(short & LAB_PLUGINS[kind])}"
    assert not [name for name in short if name.startswith("lab_")], sorted(short)


@pytest.mark.parametrize("kind", sorted(LAB_PLUGINS))
def test_the_lab_collection_has_them(kind):
    lab, _everything = listed(kind, LAB)
    assert {name.split(".", 2)[2] for name in lab} == LAB_PLUGINS[kind]


def test_product_plugins_import_nothing_from_the_lab():
    found = []
    for path in sorted((REPO / "plugins").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            found += [f"{path.relative_to(REPO)}:{node.lineno} {name}" for name in names
                      if name.startswith("ansible_collections.netfleet.calico_lab")]
    assert not found, found


def test_product_roles_and_playbooks_use_nothing_of_the_lab():
    files = [REPO / "site.yml", *sorted((REPO / "playbooks").glob("*.yml")), *sorted((REPO / "roles").rglob("*.yml")),
             *sorted((REPO / "roles").rglob("*.j2"))]
    found = [str(path.relative_to(REPO)) for path in files if LAB + "." in path.read_text()]
    assert not found, found
    assert not list((REPO / "playbooks").glob("lab_*.yml")), "lab playbooks belong in lab/playbooks"
