"""netfleet.calico.render_template in a real ansible-playbook run: the same text as ansible.builtin.template's
lookup (search path, template_vars, options, the task's variables), and the task's variables left as they were."""

from __future__ import annotations

import json

from netfleet_playbook import REPO as ROOT
from netfleet_playbook import run_local_playbook

TEMPLATE = """\
{# a comment #}
hosts {{ groups['all'] | length }}: {{ groups['all'] | join(',') }}
{% for item in items %}
- {{ item.name }} {{ item.value | default('none') }}{% if extra is defined %} {{ extra }}{% endif %}

{% endfor %}
[% custom %]
"""

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars:
    items: [{name: a, value: 1}, {name: b}]
    custom: start-end strings
  tasks:
    - name: Render with both lookups, three ways
      ansible.builtin.set_fact:
        ours: "{{ [lookup('netfleet.calico.render_template', 't.j2'),
                   lookup('netfleet.calico.render_template', 't.j2', template_vars={'extra': 'x'}),
                   lookup('netfleet.calico.render_template', 't.j2', variable_start_string='[%',
                          variable_end_string='%]', trim_blocks=false)] }}"
        builtin: "{{ [lookup('ansible.builtin.template', 't.j2'),
                      lookup('ansible.builtin.template', 't.j2', template_vars={'extra': 'x'}),
                      lookup('ansible.builtin.template', 't.j2', variable_start_string='[%',
                             variable_end_string='%]', trim_blocks=false)] }}"
    - name: Write both, and the variables after the renderings
      ansible.builtin.copy:
        content: "{{ {'ours': ours, 'builtin': builtin, 'items': items, 'extra': extra | default(none)} | to_json }}"
        dest: "{{ out }}"
        mode: '0600'
"""


def test_same_text_as_the_builtin_lookup(tmp_path):
    (tmp_path / 'templates').mkdir()
    (tmp_path / 'templates' / 't.j2').write_text(TEMPLATE)
    proc, out = run_local_playbook(tmp_path, PLAYBOOK, ROOT / 'inventories' / 'lab')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data['ours'] == data['builtin']
    assert data['ours'][0].startswith('hosts 3: ')
    assert '- a 1\n- b none\n' in data['ours'][0]
    assert '- a 1 x\n' in data['ours'][1]
    assert 'start-end strings' in data['ours'][2]
    # the renderings added their variables to a copy only
    assert data['items'] == [{'name': 'a', 'value': 1}, {'name': 'b'}]
    assert data['extra'] is None
