"""IPIP planning (plugins/plugin_utils/ipip.py) through the fabric filter, and its preflight lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.vars.hostvars import HostVars
from ansible.vars.manager import VariableManager

from ansible_collections.netfleet.calico.plugins.filter.fabric import fabric
from ansible_collections.netfleet.calico.plugins.plugin_utils.fabric import FabricError
from ansible_collections.netfleet.calico.plugins.plugin_utils.ipip import needs_tunnel

ROOT = Path(__file__).resolve().parents[3]
P = 'netfleet.calico preflight: '

HOSTS = {
    'host-a': ('rack1', '192.168.100.100'),
    'host-c': ('rack1', '192.168.100.102'),
    'host-b': ('rack2', '192.168.200.101'),
    'host-d': ('rack2', '192.168.200.103'),
}
SEGMENTS = {'rack1': '192.168.100.0/24', 'rack2': '192.168.200.0/24'}


def two_subnets(mode='cross_subnet', extra=None, facts=None):
    hostvars = {}
    for name, (rack, ip) in HOSTS.items():
        hv = {'calico_pool': '172.17.0.0/16', 'calico_block_prefix': 24, 'calico_ipip_mode': mode,
              'calico_as_number': 64512, 'lab_segment': SEGMENTS[rack], 'calico_node_ip': ip}
        if facts is not None:
            hv['calico_node_facts'] = facts.get(name, {'addresses': [{'ifname': 'eth0', 'address': ip,
                                                                      'prefixlen': 24}]})
        hv.update((extra or {}).get(name, {}))
        hostvars[name] = hv
    groups = {'all': list(HOSTS), 'ungrouped': [], 'calico_nodes': list(HOSTS), 'calico_route_reflectors': [],
              'calico_racks': list(HOSTS), 'rack1': ['host-a', 'host-c'], 'rack2': ['host-b', 'host-d']}
    return fabric(hostvars, groups, racks=['rack1', 'rack2'])


def test_cross_subnet_tunnels_only_the_other_segment():
    plan = two_subnets('cross_subnet')
    a = plan['hosts']['host-a']['ipip']
    assert a['enabled'] and a['device'] == 'tun0' and a['local'] == '192.168.100.100'
    assert a['tunnel_next_hops'] == ['192.168.200.101', '192.168.200.103']
    assert a['direct_next_hops'] == ['192.168.100.102']
    assert a['allow_from'] == ['192.168.100.102', '192.168.200.101', '192.168.200.103']
    assert plan['hosts']['host-b']['ipip']['tunnel_next_hops'] == ['192.168.100.100', '192.168.100.102']
    # BGP across the router is multihop (the template then uses a recursive gateway)
    assert {p['name']: p['direct'] for p in plan['hosts']['host-a']['peers']} == {
        'host-b': False, 'host-c': True, 'host-d': False}


def test_always_tunnels_every_next_hop_and_never_none():
    always = two_subnets('always')['hosts']['host-a']['ipip']
    assert always['tunnel_next_hops'] == ['192.168.100.102', '192.168.200.101', '192.168.200.103']
    assert always['direct_next_hops'] == []
    never = two_subnets('never')['hosts']['host-a']['ipip']
    assert never['enabled'] is False and never['tunnel_next_hops'] == []


def test_calico_spellings_accepted():
    assert two_subnets('CrossSubnet')['ipip_mode'] == 'cross_subnet'


def test_invalid_mode_is_one_line():
    with pytest.raises(FabricError) as err:
        two_subnets('sometimes')
    msg = str(err.value)
    assert msg.startswith(P) and "calico_ipip_mode 'sometimes' is not valid" in msg
    assert 'use never, always or cross_subnet' in msg and '\n' not in msg


def test_device_name_too_long():
    with pytest.raises(FabricError) as err:
        two_subnets('always', extra={'host-a': {'calico_ipip_device': 'tunnel-to-rack-2'}})
    msg = str(err.value)
    assert msg == (P + "host 'host-a': calico_ipip_device 'tunnel-to-rack-2' is longer than 15 characters — "
                   'use an interface name of at most 15 characters (default tun0)')


def test_node_ip_not_on_any_interface():
    facts = {'host-d': {'addresses': [{'ifname': 'lo', 'address': '127.0.0.1', 'prefixlen': 8},
                                      {'ifname': 'eth0', 'address': '192.168.200.13', 'prefixlen': 24}]}}
    with pytest.raises(FabricError) as err:
        two_subnets('cross_subnet', facts=facts)
    msg = str(err.value)
    assert msg == (P + "host 'host-d': node IP 192.168.200.103 is not on any interface of the host (it has "
                   "192.168.200.13) — set calico_node_ip to one of the host's own addresses (the tunnel's local end)")
    assert '\n' not in msg
    # mode never: no tunnel, no check; facts matching: fine
    two_subnets('never', facts=facts)
    two_subnets('always', facts={})


def test_needs_tunnel_rule():
    ends = [('192.168.100.100', 24), (None, None)]
    assert needs_tunnel('cross_subnet', ends, '192.168.200.1') is True
    assert needs_tunnel('cross_subnet', ends, '192.168.100.7') is False
    assert needs_tunnel('cross_subnet', [('10.0.0.1', None)], '10.0.0.2') is True  # unknown subnet: encapsulate
    assert needs_tunnel('always', ends, '192.168.100.7') is True
    assert needs_tunnel('never', ends, '192.168.200.1') is False
    # a reflector: next hops on its spine subnet stay direct in cross_subnet
    assert needs_tunnel('cross_subnet', [('192.168.101.1', 24), ('10.255.0.11', 24)], '10.255.0.21') is False


def test_lab_ipip_inventory_through_ansible():
    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[str(ROOT / 'inventories' / 'lab-ipip')])
    hostvars = HostVars(inventory, VariableManager(loader=loader, inventory=inventory), loader)
    plan = fabric(hostvars, inventory.get_groups_dict())
    assert plan['ipip_mode'] == 'cross_subnet'
    a = plan['hosts']['host-a']
    assert a['node_prefixlen'] == 24 and a['block'] == '172.17.8.0/24'
    assert a['ipip']['tunnel_next_hops'] == ['192.168.200.101', '192.168.200.103']


def test_reflector_topology_cross_subnet():
    """lab-racks in cross_subnet: a host tunnels to other racks' reflectors and hosts, not to its own rack."""
    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[str(ROOT / 'inventories' / 'lab-racks')])
    inventory.groups['all'].set_variable('calico_ipip_mode', 'cross_subnet')
    variables = VariableManager(loader=loader, inventory=inventory)
    hostvars = HostVars(inventory, variables, loader)
    plan = fabric(hostvars, inventory.get_groups_dict())
    r1h1 = plan['hosts']['r1h1']['ipip']
    assert '192.168.101.1' in r1h1['direct_next_hops'] and '192.168.102.1' in r1h1['tunnel_next_hops']
    rr1a = plan['hosts']['rr1a']['ipip']
    assert '10.255.0.21' in rr1a['direct_next_hops'] and '192.168.102.11' in rr1a['tunnel_next_hops']
