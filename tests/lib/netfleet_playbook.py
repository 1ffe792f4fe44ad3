"""Running ansible-playbook from the tests, on the controller, with the repository's ansible.cfg."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def ansible_env(**extra):
    """The environment of an ansible-playbook run: the repository's ansible.cfg, no colours, plus ``extra``."""
    return dict(os.environ, ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'), ANSIBLE_NOCOLOR='1', **extra)


def ansible_playbook(inventory, playbook, *args, env=None, timeout=120):
    """The CompletedProcess of ansible-playbook (this interpreter's) on ``inventory``; check its returncode."""
    command = [str(Path(sys.executable).with_name('ansible-playbook')), '-i', str(inventory), str(playbook), *args]
    return subprocess.run(command, cwd=REPO, env=env or ansible_env(), capture_output=True, text=True, check=False,
                          timeout=timeout)


def run_local_playbook(tmp_path, text, inventory, *args):
    """Write ``text`` (dedented) as a playbook in ``tmp_path`` and run it with a local connection and the extra
    variable ``out``, a JSON file in ``tmp_path`` for the playbook to write. Returns (CompletedProcess, out)."""
    book = tmp_path / 'play.yml'
    book.write_text(textwrap.dedent(text))
    out = tmp_path / 'out.json'
    return ansible_playbook(inventory, book, '-e', f'out={out}', '-e', 'ansible_connection=local', *args), out
