"""netfleet.calico.preload in real ansible-playbook runs: with it, a task's worker finds the filter, test and
lookup plugins already loaded by the main process; without it, each worker loads them itself."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from netfleet_playbook import REPO, ansible_env

# ansible-playbook with each task worker's newly imported modules written to OUT, one JSON list per worker. Written
# when the task's executor returns, before the worker hands its result to the main process: a worker may be ended
# once the main process has its result.
RECORDER = """
import json, os, sys
from ansible.executor import task_executor
_run = task_executor.TaskExecutor.run
def run(self):
    before = set(sys.modules)
    try:
        return _run(self)
    finally:
        with open(os.environ['OUT'], 'a') as out:
            out.write(json.dumps(sorted(set(sys.modules) - before)) + '\\n')
task_executor.TaskExecutor.run = run
from ansible.cli.playbook import main
sys.argv[0] = 'ansible-playbook'
sys.exit(main())
"""

PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - name: A filter and a test of ansible-core, a filter and the lookup of this collection
      ansible.builtin.set_fact:
        seen: "{{ (name | netfleet.calico.bird_string | length > 0) and 'yes' | bool and '2.1' is version('2', '>')
                  and lookup('netfleet.calico.render_template', 't.j2') | length > 0 }}"
      vars:
        name: host
"""

PLUGIN_FILES = ('ansible_collections.netfleet.calico.plugins.filter.bird_string',
                'ansible_collections.netfleet.calico.plugins.lookup.render_template')


def workers_imports(tmp_path, callbacks):
    """Each worker's new modules, in a run with the repository's ansible.cfg but ``callbacks`` enabled."""
    config = (REPO / 'ansible.cfg').read_text().replace('./', str(REPO) + '/')
    config = '\n'.join(line for line in config.splitlines() if not line.startswith('callbacks_enabled'))
    (tmp_path / 'ansible.cfg').write_text(config.replace('[defaults]', '[defaults]\ncallbacks_enabled = ' + callbacks
                                                         if callbacks else '[defaults]'))
    (tmp_path / 'recorder.py').write_text(RECORDER)
    (tmp_path / 'play.yml').write_text(textwrap.dedent(PLAYBOOK))
    (tmp_path / 'templates').mkdir(exist_ok=True)
    (tmp_path / 'templates' / 't.j2').write_text('{{ inventory_hostname }}\n')
    (tmp_path / 'inventory').write_text('h1 ansible_connection=local\nh2 ansible_connection=local\n')
    out = tmp_path / ('imports-%s.jsonl' % (callbacks or 'none'))
    out.unlink(missing_ok=True)
    env = dict(ansible_env(OUT=str(out), ANSIBLE_PYTHON_INTERPRETER=sys.executable),
               ANSIBLE_CONFIG=str(tmp_path / 'ansible.cfg'))
    proc = subprocess.run([sys.executable, str(tmp_path / 'recorder.py'), '-i', str(tmp_path / 'inventory'),
                           str(tmp_path / 'play.yml')], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 2  # one worker per host
    return lines


def test_workers_find_the_plugins_loaded(tmp_path):
    without = workers_imports(tmp_path, '')
    for new in without:  # the control: each worker loads them itself
        assert set(PLUGIN_FILES) <= set(new), new
        assert [m for m in new if m.startswith('ansible.plugins.filter.core')], new
    for new in workers_imports(tmp_path, 'netfleet.calico.preload'):
        assert not set(PLUGIN_FILES) & set(new), new
        assert not [m for m in new if m.startswith(('ansible.plugins.filter.', 'ansible.plugins.test.',
                                                    'ansible_collections.netfleet.calico.plugins.filter.'))], new


def test_the_repository_enables_it():
    assert 'netfleet.calico.preload' in (REPO / 'ansible.cfg').read_text()
