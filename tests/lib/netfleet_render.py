"""Render a role's configuration templates on the controller, for tests that check them with the real daemon's
parser (``bird -p``, ``vtysh --dryrun``).

A render playbook (tests/playbooks/render_*.yml) ends with a ``debug`` task per host whose ``msg`` maps the file
names to write to their contents; the ``tree`` callback saves each host's last result, and :func:`render` writes
the files from it. No module runs: a ``copy`` per file would start a Python module process for each of them.
"""

from __future__ import annotations

import json
from pathlib import Path

from netfleet_playbook import ansible_env, ansible_playbook


def render(playbook, inventory, extra_vars, out):
    """Run ``playbook`` on ``inventory`` with ``extra_vars`` (and ``render_dir``: ``out``); write every host's files
    into ``out``. Returns the CompletedProcess (check its returncode)."""
    out = Path(out)
    tree = out / '.tree'
    out.mkdir(parents=True)
    env = ansible_env(ANSIBLE_CALLBACKS_ENABLED='ansible.builtin.tree', ANSIBLE_CALLBACK_TREE_DIR=str(tree))
    proc = ansible_playbook(inventory, playbook, '-e', json.dumps(dict(extra_vars, render_dir=str(out))), env=env,
                            timeout=None)
    if proc.returncode == 0:
        for result in sorted(tree.iterdir()):
            files = json.loads(result.read_text()).get('msg')
            if not isinstance(files, dict):
                continue
            for path, content in files.items():
                if path:
                    target = out / path
                    target.write_text(content)
                    target.chmod(0o600)
    return proc
