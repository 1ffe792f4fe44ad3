"""Unit tests of plugins/plugin_utils/rollout.py's node_steps: which hosts site.yml runs the steps beside the
converge on. The decision must agree with role calico_node's own conditions (its vars/main.yml, the includes of
its tasks/main.yml): a host the preflight leaves out would skip them."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from ansible_collections.netfleet.calico.plugins.module_utils.chains import CNI_FROM_DISPATCH
from ansible_collections.netfleet.calico.plugins.plugin_utils import rollout

ROLES = Path(__file__).resolve().parents[3] / 'roles'
LOADER = DataLoader()


def trusted(value):
    """Role files' strings as templates (Ansible trusts what it loads from a role; a plain load does not)."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {key: trusted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [trusted(item) for item in value]
    return value


ROLE_VARS = {**trusted(LOADER.load_from_file(str(ROLES / 'ipip' / 'defaults' / 'main.yml'))),
             **trusted(LOADER.load_from_file(str(ROLES / 'calico_node' / 'defaults' / 'main.yml'))),
             **trusted(LOADER.load_from_file(str(ROLES / 'calico_node' / 'vars' / 'main.yml')))}
MAIN = LOADER.load_from_file(str(ROLES / 'calico_node' / 'tasks' / 'main.yml'))
CONDITION = {task['ansible.builtin.include_tasks']: trust_as_template(task['when'])
             for task in MAIN if 'ansible.builtin.include_tasks' in task}


def role_decides(inventory, entry, facts, include):
    """What role calico_node's include of ``include`` decides for host h1 (role defaults, its vars, the inventory)."""
    variables = {**ROLE_VARS, **trusted(inventory), 'inventory_hostname': 'h1',
                 'calico_node_fabric': {'hosts': {'h1': entry}}}
    if facts is not None:
        variables['ansible_facts'] = {'calico_node_facts': facts}
    return Templar(LOADER, variables=variables).evaluate_conditional(CONDITION[include])


def preflight_decides(inventory, entry, facts):
    hostvars = {'h1': dict(inventory, **({'ansible_facts': {'calico_node_facts': facts}} if facts else {}))}
    plan = {'hosts': {'h1': entry}}
    return rollout.node_steps(plan, rollout.node_settings(hostvars, ['h1']))


INVENTORIES = [
    {}, {'calico_node_install_packages': False}, {'calico_node_install_packages': 'no'},
    {'calico_node_install_packages': False, 'calico_nat_outgoing': True},
    {'calico_node_install_packages': False, 'calico_nat_outgoing': True, 'calico_node_nat_outgoing': 'false'},
    {'calico_node_install_packages': 'false', 'calico_node_nat_outgoing': 'yes'},
    {'calico_node_install_packages': False, 'calico_policies': [{'name': 'p'}]},
    {'calico_node_install_packages': False, 'ipip_chain': 'cali-mine'},
]
ENTRIES = [
    {'blocks': ['10.0.0.0/24'], 'workloads': [], 'cni': {'enabled': False}},
    {'blocks': ['10.0.0.0/24'], 'workloads': [], 'cni': {'enabled': True}},
    {'blocks': ['10.0.0.0/24'], 'workloads': [], 'cni': {'enabled': False}, 'floating_ips': ['10.9.0.1/32']},
    {'blocks': ['10.0.0.0/24'], 'blocks_v6': ['fd00::/122'], 'workloads': [], 'cni': {'enabled': False}},
    {'blocks': ['10.0.0.0/24'], 'workloads': [], 'cni': {'enabled': False}, 'floating_ips': []},
]
READ = {'bgp': {'socket': '/run/bird/bird.ctl'}}  # site.yml's fact play read BIRD's sessions from the role's socket
FACTS = [None] + [dict(READ, **facts) for facts in (
    {'cali_chains': {}, 'cali_chains6': {}},
    {'cali_chains': {'filter': ['cali-INPUT-ipip']}, 'cali_chains6': {}},
    {'cali_chains': {'filter': ['cali-mine']}},
    {'cali_chains': {'filter': ['cali-INPUT', 'cali-INPUT-ipip'], 'nat': ['cali-POSTROUTING']}},
    {'cali_chains': {'filter': [CNI_FROM_DISPATCH]}},
    {'cali_chains': {}, 'cali_chains6': {'raw': ['cali-PREROUTING']}},
)]


@pytest.mark.parametrize('inventory, entry, facts', list(itertools.product(INVENTORIES, ENTRIES, FACTS)))
def test_the_preflight_decides_as_the_role_does(inventory, entry, facts):
    steps = preflight_decides(inventory, entry, facts)
    assert ('h1' in steps['prepare']) == role_decides(inventory, entry, facts, 'prepare.yml')
    # the CNI plugin's half of the after-converge step; the drop of old sessions follows the transition
    assert ('h1' in steps['after']) == role_decides(inventory, entry, facts, 'after.yml')


def test_a_fleet_with_nothing_to_prepare_runs_no_step():
    entry = {'blocks': ['10.0.0.0/24'], 'workloads': [], 'cni': {'enabled': False}}
    facts = {'cali_chains': {'filter': ['cali-INPUT-ipip']}, 'cali_chains6': {}}
    hostvars = {name: {'calico_node_install_packages': False, 'ansible_facts': {'calico_node_facts': facts}}
                for name in ('h1', 'h2', 'rr1')}
    plan = {'hosts': {'h1': entry, 'h2': entry, 'rr1': {'role': 'reflector', 'block': None}}}
    settings = rollout.node_settings(hostvars, plan['hosts'])
    assert rollout.node_steps(plan, settings) == {'prepare': [], 'after': []}
    # a peer change: the hosts that change drop their old sessions after the converge
    assert rollout.node_steps(plan, settings, ['h2', 'rr1']) == {'prepare': [], 'after': ['h2']}
    # the facts of a host as a variable of their own (ansible-core's INJECT_FACTS_AS_VARS) are read too
    hostvars['h1'] = {'calico_node_install_packages': False, 'calico_node_facts': {'cali_chains': {'nat': ['cali-x']}}}
    assert rollout.node_steps(plan, rollout.node_settings(hostvars, plan['hosts']))['prepare'] == ['h1']


def test_the_cni_dispatch_chain_is_the_plugins():
    assert rollout.CNI_DISPATCH_CHAIN == CNI_FROM_DISPATCH
