"""inventories/example is a sound inventory for a real fleet over SSH: it plans cleanly (the preflight's
filter in a real ansible-playbook run, nothing contacted) and every host is reached by ssh + sudo with host
key checking on."""

from __future__ import annotations

import json

from netfleet_playbook import REPO as ROOT
from netfleet_playbook import run_local_playbook

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        content: "{{ {'plan': hostvars | netfleet.calico.fabric(groups),
                      'conn': dict(groups['all'] | zip(groups['all'] | map('extract', hostvars)
                                   | map('dict2items') | map('selectattr', 'key', 'in', keys) | map('items2dict')))}
                     | to_json }}"
        dest: "{{ out }}"
      vars:
        keys: [ansible_connection, ansible_host, ansible_user, ansible_become, ansible_become_method,
               ansible_host_key_checking]
      delegate_to: localhost
"""


def test_example_inventory_plans_and_uses_ssh_with_sudo(tmp_path):
    proc, out = run_local_playbook(tmp_path, PLAYBOOK, ROOT / 'inventories' / 'example')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    plan = data['plan']
    assert plan['topology'] == 'route_reflector'
    hosts = plan['hosts']
    assert hosts['r02-node01']['block'] == '10.244.8.0/26'
    assert {p['ip'] for p in hosts['r01-node01']['peers']} == {'10.10.1.1', '10.10.1.2'}   # the rack's ToRs
    assert {p['ip'] for p in hosts['r02-node02']['peers']} == {'10.10.2.5'}                # its reflector server
    tor = hosts['tor-r01-a']   # BGP on the rack-facing address, eBGP from the spine, ssh on the management one
    assert (tor['node_ip'], tor['spine_ip'], tor['role']) == ('10.10.1.1', '10.0.0.11', 'reflector')
    assert {p['name']: p['type'] for p in tor['peers']}['rr-r02'] == 'ebgp'
    conn = data['conn']
    assert set(conn) == set(hosts)
    for host, c in conn.items():
        # -e ansible_connection=local above only keeps this check local; the inventory itself says ssh
        assert c['ansible_user'] == 'deploy' and c['ansible_become'] is True, host
        assert c['ansible_become_method'] == 'ansible.builtin.sudo' and c['ansible_host_key_checking'] is True, host
        assert c['ansible_host'], host
    groups_vars = (ROOT / 'inventories' / 'example' / 'group_vars' / 'all' / 'main.yml').read_text()
    assert 'ansible_connection: ansible.builtin.ssh' in groups_vars
