"""End to end: the filters resolve by FQCN inside a real ansible-playbook run on the lab inventory."""

from __future__ import annotations

import json

from netfleet_playbook import REPO as ROOT
from netfleet_playbook import run_local_playbook

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.set_fact:
        plan: "{{ hostvars | netfleet.calico.fabric(groups) }}"
        ifn: "{{ 'a1' | netfleet.calico.ifname }}"
        blocks: "{{ ['x', {'name': 'y', 'block': '10.0.9.0/24'}] | netfleet.calico.block_allocate('10.0.0.0/16', 24) }}"
        wl: "{{ [{'name': 'a1'}] | netfleet.calico.workload_addresses('172.17.8.0/24') }}"
        peers: "{{ {'a': {'ip': '10.0.0.1'}, 'b': {'ip': '10.0.0.2'}} | netfleet.calico.bgp_peers(host='a') }}"
    - ansible.builtin.copy:
        content: "{{ {'plan': plan, 'ifn': ifn, 'blocks': blocks, 'wl': wl, 'peers': peers} | to_json }}"
        dest: "{{ out }}"
      delegate_to: localhost
"""


def _run(tmp_path, *extra):
    return run_local_playbook(tmp_path, PLAYBOOK, ROOT / 'inventories' / 'lab', *extra)


def test_filters_in_a_playbook(tmp_path):
    proc, out = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data['plan']['hosts']['host-a']['block'] == '172.17.8.0/24'
    assert data['plan']['hosts']['host-b']['block'] == '172.17.9.0/24'
    assert data['plan']['hosts']['host-a']['peers'][0]['passive'] is True
    assert data['ifn'] == 'calif29bc91bbda'
    assert data['blocks'] == {'x': '10.0.0.0/24', 'y': '10.0.9.0/24'}
    assert data['wl'] == [{'name': 'a1', 'ip': '172.17.8.2'}]
    assert data['peers'][0]['name'] == 'b'


def test_preflight_failure_in_a_playbook_shows_the_one_line(tmp_path):
    proc, _unused = _run(tmp_path, '-e', 'calico_pool=172.17.8.0/23')
    assert proc.returncode != 0
    assert ("netfleet.calico preflight: host 'host-c': no free /24 left in calico_pool 172.17.8.0/23 (2 blocks, all "
            "in use) — enlarge calico_pool or raise calico_block_prefix") in proc.stdout + proc.stderr


def test_undefined_variable_in_a_playbook_is_a_preflight_error(tmp_path):
    proc, _unused = _run(tmp_path, '-e', '{"calico_block": "{{ not_defined_anywhere }}"}')
    assert proc.returncode != 0
    assert ("netfleet.calico preflight: host 'host-a': cannot evaluate calico_block: 'not_defined_anywhere' is "
            "undefined — fix the definition of calico_block for this host") in proc.stdout + proc.stderr
