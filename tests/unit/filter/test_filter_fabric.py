"""netfleet.calico.fabric: the composed plan and every preflight error, on plain dicts and on real inventories."""

from __future__ import annotations

import copy
import random
import textwrap
from pathlib import Path

import jinja2
import pytest
from ansible.errors import AnsibleFilterError
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.vars.hostvars import HostVars
from ansible.vars.manager import VariableManager

from ansible_collections.netfleet.calico.plugins.filter.fabric import FilterModule, fabric
from ansible_collections.netfleet.calico.plugins.plugin_utils import fabric as plan_utils
from ansible_collections.netfleet.calico.plugins.plugin_utils import inputs
from ansible_collections.netfleet.calico.plugins.plugin_utils.bgp import session_timing

ROOT = Path(__file__).resolve().parents[3]
LAB = ROOT / 'inventories' / 'lab'
P = 'netfleet.calico preflight: '


# --------------------------------------------------------------------------------------------- fixtures

def build(hosts, racks=None, reflectors=(), nodes=None, allvars=None, **kwargs):
    """Plain-dict fleet: ``hosts`` {name: vars}; ``racks`` {rack: (rack_vars, [hosts])}; vars merge like Ansible's."""
    allvars = {'calico_pool': '172.17.0.0/16', 'calico_block_prefix': 24, **(allvars or {})}
    racks = racks or {}
    hostvars = {}
    for name, own in hosts.items():
        merged = dict(allvars)
        for rack_vars, members in racks.values():
            if name in members:
                merged.update(rack_vars)
        merged.update(own)
        hostvars[name] = merged
    groups = {'all': list(hosts), 'ungrouped': [], GROUP_REFLECTORS: list(reflectors)}
    groups[GROUP_NODES] = list(nodes) if nodes is not None else [h for h in hosts if h not in reflectors]
    groups['calico_racks'] = sorted({h for _unused, members in racks.values() for h in members})
    for rack, (_unused, members) in racks.items():
        groups[rack] = list(members)
    return fabric(hostvars, groups, racks=list(racks), **kwargs)


GROUP_NODES = 'calico_nodes'
GROUP_REFLECTORS = 'calico_route_reflectors'


def lab_hosts():
    return {
        'host-a': {'calico_node_ip': '192.168.100.100', 'calico_block': '172.17.8.0/24',
                   'calico_workloads': [{'name': 'a1'}, {'name': 'a2'}]},
        'host-b': {'calico_node_ip': '192.168.100.101', 'calico_block': '172.17.9.0/24',
                   'calico_workloads': [{'name': 'b1'}, {'name': 'b2'}]},
        'host-c': {'calico_node_ip': '192.168.100.102', 'calico_workloads': [{'name': 'c1'}, {'name': 'c2'}]},
    }


LAB_RACKS = {'rack1': ({'calico_as_number': 64512, 'lab_segment': '192.168.100.0/24'},
                       ['host-a', 'host-b', 'host-c'])}


def lab(hosts=None, racks=None, **kwargs):
    kwargs.setdefault('allvars', {'calico_bgp_topology': 'full_mesh'})
    return build(hosts or lab_hosts(), racks=LAB_RACKS if racks is None else racks, **kwargs)


def rr_fleet(hosts_over=None, racks_over=None, reflectors=None, nodes=None, **kwargs):
    """Two racks: rack1 (rr1, a ToR with no workloads; h1, h2), rack2 (rr2a, rr2b -- rr2b is also a server; h3)."""
    hosts = {
        'rr1': {'calico_node_ip': '10.1.0.1'},
        'h1': {'calico_node_ip': '10.1.0.11', 'calico_workloads': [{'name': 'w1'}]},
        'h2': {'calico_node_ip': '10.1.0.12'},
        'rr2a': {'calico_node_ip': '10.2.0.2'},
        'rr2b': {'calico_node_ip': '10.2.0.1', 'calico_workloads': [{'name': 'w2'}]},
        'h3': {'calico_node_ip': '10.2.0.11'},
    }
    for name, extra in (hosts_over or {}).items():
        hosts[name] = {**hosts.get(name, {}), **extra}
    racks = {'rack1': ({'calico_as_number': 65001}, ['rr1', 'h1', 'h2']),
             'rack2': ({'calico_as_number': 65002}, ['rr2a', 'rr2b', 'h3'])}
    racks.update(racks_over or {})
    reflectors = ['rr1', 'rr2a', 'rr2b'] if reflectors is None else reflectors
    nodes = ['h1', 'h2', 'h3', 'rr2b'] if nodes is None else nodes
    kwargs.setdefault('allvars', {'calico_bgp_topology': 'route_reflector'})
    return build(hosts, racks=racks, reflectors=reflectors, nodes=nodes, **kwargs)


def error_of(func, *args, **kwargs):
    with pytest.raises(AnsibleFilterError) as exc:
        func(*args, **kwargs)
    text = str(exc.value)
    assert '\n' not in text
    return text


def peer(name, ip, as_number=64512, passive=None, kind='ibgp', client=False, cluster=None, local=None,
         direct=None, spread=True):
    """A planned peer. ``passive`` is given only for reflector-client sessions (the reflector dials, offset 0);
    otherwise the session's timing is plugin_utils.bgp.session_timing's (tested on its own)."""
    offset = 0
    if passive is None:
        passive, offset = session_timing(local, ip, spread)
    return {'name': name, 'ip': ip, 'local_ip': local, 'as_number': as_number, 'type': kind, 'direct': direct,
            'passive': passive, 'connect_delay_offset': offset, 'rr_client': client, 'rr_cluster_id': cluster}


def lab_peer(name, ip, local):
    """A session of the lab's one-segment mesh (every prefix length known: direct)."""
    return peer(name, ip, local=local, direct=True)


# --------------------------------------------------------------------------------------------- happy paths

def test_filter_is_registered():
    assert FilterModule().filters() == {'fabric': fabric}


EXPECTED_LAB = {
    'pool': '172.17.0.0/16',
    'block_prefix': 24,
    'max_blocks_per_host': 1,
    'topology': 'full_mesh',
    'ipip_mode': 'never',
    'bfd': None,
    'hosts': {
        'host-a': {
            'node_ip': '192.168.100.100', 'node_prefixlen': 24, 'router_id': '192.168.100.100', 'as_number': 64512,
            'rack': 'rack1', 'role': 'node', 'spine_ip': None, 'spine_prefixlen': None,
            'block': '172.17.8.0/24', 'blocks': ['172.17.8.0/24'], 'block_source': 'pinned',
            'workloads': [{'name': 'a1', 'ip': '172.17.8.2', 'ifname': 'calif29bc91bbda'},
                          {'name': 'a2', 'ip': '172.17.8.3', 'ifname': 'calib9f85daa6f8'}],
            'peers': [lab_peer('host-b', '192.168.100.101', '192.168.100.100'),
                      lab_peer('host-c', '192.168.100.102', '192.168.100.100')],
        },
        'host-b': {
            'node_ip': '192.168.100.101', 'node_prefixlen': 24, 'router_id': '192.168.100.101', 'as_number': 64512,
            'rack': 'rack1', 'role': 'node', 'spine_ip': None, 'spine_prefixlen': None,
            'block': '172.17.9.0/24', 'blocks': ['172.17.9.0/24'], 'block_source': 'pinned',
            'workloads': [{'name': 'b1', 'ip': '172.17.9.2', 'ifname': 'cali7e83ca2a65d'},
                          {'name': 'b2', 'ip': '172.17.9.3', 'ifname': 'cali32f28ea03b1'}],
            'peers': [lab_peer('host-a', '192.168.100.100', '192.168.100.101'),
                      lab_peer('host-c', '192.168.100.102', '192.168.100.101')],
        },
        'host-c': {
            'node_ip': '192.168.100.102', 'node_prefixlen': 24, 'router_id': '192.168.100.102', 'as_number': 64512,
            'rack': 'rack1', 'role': 'node', 'spine_ip': None, 'spine_prefixlen': None,
            'block': '172.17.0.0/24', 'blocks': ['172.17.0.0/24'], 'block_source': 'allocated',
            'workloads': [{'name': 'c1', 'ip': '172.17.0.2', 'ifname': 'cali2f22765d049'},
                          {'name': 'c2', 'ip': '172.17.0.3', 'ifname': 'cali6b1f53303a7'}],
            'peers': [lab_peer('host-a', '192.168.100.100', '192.168.100.102'),
                      lab_peer('host-b', '192.168.100.101', '192.168.100.102')],
        },
    },
    'racks': {'rack1': {'as_number': 64512, 'hosts': ['host-a', 'host-b', 'host-c'], 'reflectors': [],
                        'cluster_id': None}},
}

# no calico_policies and no floating IPs -> every endpoint unselected (allow all)
EXPECTED_LAB['floating_ips'] = []
for _host in EXPECTED_LAB['hosts'].values():
    _host['policy'] = [{'name': w['name'], 'ip': w['ip'], 'ifname': w['ifname'], 'ingress': None, 'egress': None,
                        'policies': []} for w in _host['workloads']]
    _host['floating_ips'] = []
    _host['cni'] = {'enabled': False}  # no calico_cni: no container networks
    _host['external_peers'] = []  # no calico_bgp_peers: no router outside the fleet, no BFD
    _host['bfd'] = None
# calico_ipip_mode never -> no tunnel, every other node IP direct, proto 4 only from node IPs
for _name, _host in EXPECTED_LAB['hosts'].items():
    _others = [h['node_ip'] for n, h in EXPECTED_LAB['hosts'].items() if n != _name]
    _host['ipip'] = {'mode': 'never', 'enabled': False, 'device': 'tun0', 'local': _host['node_ip'],
                     'tunnel_next_hops': [], 'direct_next_hops': _others, 'allow_from': _others}

# every session imports exactly the peer's own block (full mesh: each host announces its block only)
for _host in EXPECTED_LAB['hosts'].values():
    _host['imports'] = {p['name']: {'prefixes': [EXPECTED_LAB['hosts'][p['name']]['block']], 'any_block': None,
                                    'any_floating': False, 'except': [], 'receive_limit': 68}
                        for p in _host['peers']}


def test_lab_plain_dicts_exact_plan():
    assert lab() == EXPECTED_LAB


def _real_inventory(source):
    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[str(source)])
    variables = VariableManager(loader=loader, inventory=inventory)
    return HostVars(inventory, variables, loader), inventory.get_groups_dict()


def test_lab_inventory_through_ansible():
    """The real lab inventory, parsed by Ansible, through HostVars (racks from the inventory hierarchy)."""
    hostvars, groups = _real_inventory(LAB)
    plan = fabric(hostvars, groups)
    assert plan['hosts']['host-a']['block'] == '172.17.8.0/24'
    assert plan['hosts']['host-b']['block'] == '172.17.9.0/24'
    assert plan['hosts']['host-c']['block'] == '172.17.0.0/24'
    assert [w['ip'] for w in plan['hosts']['host-a']['workloads']] == ['172.17.8.2', '172.17.8.3']
    assert plan['topology'] == 'full_mesh'
    for name, host in plan['hosts'].items():
        others = sorted(set(plan['hosts']) - {name})
        assert [p['name'] for p in host['peers']] == others
        for p in host['peers']:
            assert (p['passive'], p['connect_delay_offset']) == session_timing(host['node_ip'], p['ip'])
            assert p['type'] == 'ibgp' and p['as_number'] == 64512
    assert plan == EXPECTED_LAB


RR_INVENTORY = """
all:
  vars:
    calico_pool: 10.244.0.0/16
    calico_block_prefix: 26
    calico_bgp_topology: route_reflector
  children:
    calico_racks:
      children:
        rack1:
          vars: {calico_as_number: 65001, lab_segment: 10.1.0.0/24}
          hosts:
            tor1: {calico_node_ip: 10.1.0.1}
            r1-h1: {calico_node_ip: 10.1.0.11, calico_workloads: [{name: web}]}
            r1-h2: {calico_node_ip: 10.1.0.12}
        rack2:
          vars: {calico_as_number: 65002, calico_rr_cluster_id: 10.255.0.2}
          hosts:
            tor2: {calico_node_ip: 10.2.0.1, calico_node_prefixlen: 24}
            r2-h1: {calico_node_ip: 10.2.0.11}
    calico_route_reflectors:
      hosts:
        tor1:
        tor2:
    calico_nodes:
      hosts:
        r1-h1:
        r1-h2:
        r2-h1:
    other:
      hosts:
        r1-h1:
"""


def test_route_reflector_inventory_through_ansible(tmp_path):
    (tmp_path / 'hosts.yml').write_text(textwrap.dedent(RR_INVENTORY))
    hostvars, groups = _real_inventory(tmp_path / 'hosts.yml')
    plan = fabric(hostvars, groups)
    assert plan['racks'] == {
        'rack1': {'as_number': 65001, 'hosts': ['r1-h1', 'r1-h2', 'tor1'], 'reflectors': ['tor1'],
                  'cluster_id': '10.1.0.1'},
        'rack2': {'as_number': 65002, 'hosts': ['r2-h1', 'tor2'], 'reflectors': ['tor2'], 'cluster_id': '10.255.0.2'},
    }
    hosts = plan['hosts']
    assert hosts['tor1']['role'] == 'reflector' and hosts['tor1']['block'] is None and hosts['tor1']['workloads'] == []
    assert hosts['tor1']['node_prefixlen'] == 24 and hosts['r2-h1']['node_prefixlen'] is None
    assert hosts['tor2']['node_prefixlen'] == 24
    assert [h['block'] for h in (hosts['r1-h1'], hosts['r1-h2'], hosts['r2-h1'])] == [
        '10.244.0.0/26', '10.244.0.64/26', '10.244.0.128/26']
    assert hosts['r1-h1']['workloads'] == [{'name': 'web', 'ip': '10.244.0.2', 'ifname': inputs.interface_name('web')}]
    assert hosts['r1-h1']['peers'] == [peer('tor1', '10.1.0.1', 65001, passive=True, local='10.1.0.11', direct=True)]
    # tor1's prefix length comes from rack1's lab_segment, tor2's from calico_node_prefixlen; rack2's hosts have none
    assert hosts['tor1']['peers'] == [
        peer('r1-h1', '10.1.0.11', 65001, passive=False, client=True, cluster='10.1.0.1', local='10.1.0.1',
             direct=True),
        peer('r1-h2', '10.1.0.12', 65001, passive=False, client=True, cluster='10.1.0.1', local='10.1.0.1',
             direct=True),
        peer('tor2', '10.2.0.1', 65002, kind='ebgp', local='10.1.0.1', direct=False),
    ]
    assert hosts['tor2']['peers'] == [
        peer('r2-h1', '10.2.0.11', 65002, passive=False, client=True, cluster='10.255.0.2', local='10.2.0.1',
             direct=True),
        peer('tor1', '10.1.0.1', 65001, kind='ebgp', local='10.2.0.1', direct=False),
    ]
    # no calico_rr_spine_ip: the spine address is the node IP
    assert (hosts['tor1']['spine_ip'], hosts['tor1']['spine_prefixlen']) == ('10.1.0.1', 24)
    assert (hosts['r1-h1']['spine_ip'], hosts['r1-h1']['spine_prefixlen']) == (None, None)


LAB_RACKS_INVENTORY = ROOT / 'inventories' / 'lab-racks'


def test_lab_racks_inventory_through_ansible():
    """inventories/lab-racks: hosts peer with their rack's reflectors only; reflectors peer by eBGP over the spine."""
    hostvars, groups = _real_inventory(LAB_RACKS_INVENTORY)
    plan = fabric(hostvars, groups)
    assert plan['topology'] == 'route_reflector'
    hosts = plan['hosts']
    assert plan['racks']['rack1'] == {'as_number': 65001, 'hosts': ['r1h1', 'r1h2', 'r1h3', 'rr1a', 'rr1b'],
                                      'reflectors': ['rr1a', 'rr1b'], 'cluster_id': '192.168.101.1'}
    assert [plan['racks'][r]['cluster_id'] for r in ('rack2', 'rack3')] == ['192.168.102.1', '192.168.103.1']
    rr1a = {k: v for k, v in hosts['rr1a'].items()
            if k not in ('peers', 'policy', 'floating_ips', 'ipip', 'cni', 'imports')}
    assert rr1a == {'node_ip': '192.168.101.1', 'node_prefixlen': 24, 'router_id': '192.168.101.1',
                    'as_number': 65001, 'rack': 'rack1', 'role': 'reflector', 'spine_ip': '10.255.0.11',
                    'spine_prefixlen': 24, 'block': None, 'blocks': [], 'block_source': None, 'workloads': [],
                    'external_peers': [], 'bfd': None}

    def rr1(name, ip, **kw):
        return peer(name, ip, 65001, local=kw.pop('local', '192.168.101.1'), direct=True, **kw)

    assert hosts['rr1a']['peers'] == [
        rr1('r1h1', '192.168.101.11', passive=False, client=True, cluster='192.168.101.1'),
        rr1('r1h2', '192.168.101.12', passive=False, client=True, cluster='192.168.101.1'),
        rr1('r1h3', '192.168.101.13', passive=False, client=True, cluster='192.168.101.1'),
        rr1('rr1b', '192.168.101.2', spread=False),  # same rack: iBGP, not a client
        peer('rr2', '10.255.0.21', 65002, kind='ebgp', local='10.255.0.11', direct=True, spread=False),
        peer('rr3', '10.255.0.31', 65003, kind='ebgp', local='10.255.0.11', direct=True, spread=False),
    ]
    assert hosts['r1h1']['spine_ip'] is None and hosts['r1h1']['block'] == '172.17.0.0/24'
    assert hosts['r1h1']['peers'] == [rr1('rr1a', '192.168.101.1', passive=True, local='192.168.101.11'),
                                      rr1('rr1b', '192.168.101.2', passive=True, local='192.168.101.11')]
    assert [(p['name'], p['ip'], p['local_ip'], p['type'], p['rr_client'], p['passive'])
            for p in hosts['rr2']['peers']] == [
        ('r2h1', '192.168.102.11', '192.168.102.1', 'ibgp', True, False),
        ('r2h2', '192.168.102.12', '192.168.102.1', 'ibgp', True, False),
        ('r2h3', '192.168.102.13', '192.168.102.1', 'ibgp', True, False),
        ('rr1a', '10.255.0.11', '10.255.0.21', 'ebgp', False, session_timing('10.255.0.21', '10.255.0.11')[0]),
        ('rr1b', '10.255.0.12', '10.255.0.21', 'ebgp', False, session_timing('10.255.0.21', '10.255.0.12')[0]),
        ('rr3', '10.255.0.31', '10.255.0.21', 'ebgp', False, session_timing('10.255.0.21', '10.255.0.31')[0]),
    ]
    # what each session may bring in: a reflector from its client that client's block; a host from its rack's
    # reflector any block but its own, a reflector from another rack's any block but its rack's (exactly the
    # block length: never a prefix inside a block) with the origin AS of the block's rack, so adding a host
    # changes its peers' configuration (and the origin check of other racks' reflectors) only
    blocks = {name: host['block'] for name, host in hosts.items() if host['block']}
    assert hosts['rr1a']['imports']['r1h2'] == {'prefixes': [blocks['r1h2']], 'any_block': None,
                                                'any_floating': False, 'except': [], 'receive_limit': 68}
    assert hosts['r1h1']['imports']['rr1a'] == {'prefixes': [], 'any_block': '172.17.0.0/16{24,24}',
                                                'any_floating': False, 'except': [blocks['r1h1'] + '+'],
                                                'origin_check': False, 'receive_limit': 256 + 64}
    assert hosts['rr1a']['imports']['rr2']['origin_check'] is True
    assert hosts['rr1a']['imports']['rr2']['except'] == [blocks[h] + '+' for h in ('r1h1', 'r1h2', 'r1h3')]
    assert hosts['rr1a']['imports']['rr1b']['except'] == []
    for name, host in hosts.items():
        if host['role'] == 'node':
            rack = plan['racks'][host['rack']]
            assert [p['name'] for p in host['peers']] == rack['reflectors'], name
            assert {p['rr_cluster_id'] for p in hosts[rack['reflectors'][0]]['peers'] if p['rr_client']} == {
                rack['cluster_id']}
        for p in host['peers']:  # both ends agree on the session; exactly one dials
            back = next(q for q in hosts[p['name']]['peers'] if q['name'] == name)
            assert (back['ip'], back['local_ip'], back['type'], back['direct']) == (
                p['local_ip'], p['ip'], p['type'], p['direct'])
            assert back['passive'] != p['passive']


def two_racks(rr1=None, rr2=None, **allvars):
    """rack1: rr1 + h1, rack2: rr2 + h2 (route_reflector)."""
    hosts = {'rr1': {'calico_node_ip': '10.1.0.1', **(rr1 or {})}, 'h1': {'calico_node_ip': '10.1.0.11'},
             'rr2': {'calico_node_ip': '10.2.0.1', **(rr2 or {})}, 'h2': {'calico_node_ip': '10.2.0.11'}}
    racks = {'rack1': ({'calico_as_number': 65001}, ['rr1', 'h1']),
             'rack2': ({'calico_as_number': 65002}, ['rr2', 'h2'])}
    return build(hosts, racks=racks, reflectors=['rr1', 'rr2'], allvars={'calico_bgp_topology': 'route_reflector',
                                                                         **allvars})


def test_spine_ip_defaults_prefix_lengths_and_direct():
    # rr1's prefix length from calico_rr_spine_prefixlen, rr2's from lab_spine_segment
    plan = two_racks({'calico_rr_spine_ip': '10.255.0.1', 'calico_rr_spine_prefixlen': 30},
                     {'calico_rr_spine_ip': '10.255.0.2'}, lab_spine_segment='10.255.0.0/24')
    h = plan['hosts']
    assert (h['rr1']['spine_ip'], h['rr1']['spine_prefixlen']) == ('10.255.0.1', 30)
    assert (h['rr2']['spine_ip'], h['rr2']['spine_prefixlen']) == ('10.255.0.2', 24)
    assert h['rr1']['peers'] == [
        peer('h1', '10.1.0.11', 65001, passive=False, client=True, cluster='10.1.0.1', local='10.1.0.1'),
        peer('rr2', '10.255.0.2', 65002, kind='ebgp', local='10.255.0.1', direct=True),
    ]
    assert h['rr2']['peers'][-1] == peer('rr1', '10.255.0.1', 65001, kind='ebgp', local='10.255.0.2', direct=True)
    # node IPs, no prefix length
    assert h['h1']['peers'] == [peer('rr1', '10.1.0.1', 65001, passive=True, local='10.1.0.11')]
    # a /30 and a /24 where only one contains the other end: not direct, on both sides
    plan = two_racks({'calico_rr_spine_ip': '10.255.0.1', 'calico_rr_spine_prefixlen': 30},
                     {'calico_rr_spine_ip': '10.255.0.9', 'calico_rr_spine_prefixlen': 24})
    assert plan['hosts']['rr1']['peers'][-1]['direct'] is False
    assert plan['hosts']['rr2']['peers'][-1]['direct'] is False
    # no spine IP: the node IP, with the node's prefix length; direct from one known prefix length
    plan = two_racks({'calico_node_prefixlen': 8})
    assert (plan['hosts']['rr1']['spine_ip'], plan['hosts']['rr1']['spine_prefixlen']) == ('10.1.0.1', 8)
    assert plan['hosts']['rr1']['peers'][-1] == peer('rr2', '10.2.0.1', 65002, kind='ebgp',
                                                     local='10.1.0.1', direct=True)
    assert plan['hosts']['rr2']['peers'][-1]['direct'] is True
    # a spine IP equal to the node IP keeps the node prefix length
    plan = two_racks({'calico_rr_spine_ip': '10.1.0.1', 'calico_node_prefixlen': 16})
    assert (plan['hosts']['rr1']['spine_ip'], plan['hosts']['rr1']['spine_prefixlen']) == ('10.1.0.1', 16)


def test_spine_ip_in_full_mesh_is_reported_but_unused():
    plan = rr_fleet(hosts_over={'rr1': {'calico_rr_spine_ip': '10.255.0.1'}},
                    allvars={'calico_bgp_topology': 'full_mesh'})
    assert plan['hosts']['rr1']['spine_ip'] == '10.255.0.1'
    assert {p['ip'] for p in plan['hosts']['rr2a']['peers']} == {
        '10.1.0.1', '10.1.0.11', '10.1.0.12', '10.2.0.1', '10.2.0.11'}


@pytest.mark.parametrize('over, expected', [
    ({'h1': {'calico_rr_spine_ip': '10.255.0.5'}},
     "host 'h1': calico_rr_spine_ip 10.255.0.5 is set but the host is not a route reflector — drop "
     "calico_rr_spine_ip, or add the host to calico_route_reflectors"),
    ({'rr1': {'calico_rr_spine_ip': '10.255.0.300'}},
     "host 'rr1': calico_rr_spine_ip '10.255.0.300' is not an IPv4 address — set calico_rr_spine_ip to the "
     "reflector's address toward other racks' reflectors, or drop it (defaults to calico_node_ip)"),
    ({'rr1': {'calico_rr_spine_ip': '0.0.0.0'}}, "host 'rr1': calico_rr_spine_ip '0.0.0.0' is not an IPv4 address"),
    ({'rr1': {'calico_rr_spine_ip': '10.255.0.1', 'calico_rr_spine_prefixlen': 33}},
     "host 'rr1': calico_rr_spine_prefixlen 33 is not a prefix length 0-32 — set it to the prefix length of the "
     "reflector's spine subnet, or drop it"),
    ({'rr1': {'calico_rr_spine_ip': '10.255.0.1', 'lab_spine_segment': '10.255.0.0/33'}},
     "host 'rr1': lab_spine_segment '10.255.0.0/33' is not a valid IPv4 CIDR — set lab_spine_segment to the "
     "spine's subnet, e.g. 10.255.0.0/24"),
    ({'rr1': {'calico_rr_spine_ip': '10.255.0.1'}, 'rr2a': {'calico_rr_spine_ip': '10.255.0.1'}},
     "host 'rr2a': spine IP 10.255.0.1 is also the spine IP of host 'rr1' — give each reflector a "
     "calico_rr_spine_ip that no other host uses"),
    ({'rr1': {'calico_rr_spine_ip': '10.2.0.11'}},
     "host 'rr1': spine IP 10.2.0.11 is also the node IP of host 'h3' — give each reflector a calico_rr_spine_ip "
     "that no other host uses"),
    ({'rr2a': {'calico_rr_spine_ip': '10.2.0.1'}},  # the other reflector's default spine address (its node IP)
     "host 'rr2a': spine IP 10.2.0.1 is also the node IP of host 'rr2b'"),
])
def test_spine_errors(over, expected):
    assert error_of(rr_fleet, hosts_over=over).startswith(P + expected)


def test_host_in_two_racks_through_ansible(tmp_path):
    text = textwrap.dedent(RR_INVENTORY).replace('r2-h1: {calico_node_ip: 10.2.0.11}',
                                                 'r2-h1: {calico_node_ip: 10.2.0.11}\n            r1-h2:')
    (tmp_path / 'hosts.yml').write_text(text)
    hostvars, groups = _real_inventory(tmp_path / 'hosts.yml')
    assert error_of(fabric, hostvars, groups) == (
        P + "host 'r1-h2': is in two racks (rack1, rack2) — put each host in exactly one child group of calico_racks")


def test_route_reflector_plain_dicts():
    plan = rr_fleet()
    hosts = plan['hosts']
    assert plan['racks']['rack2'] == {'as_number': 65002, 'hosts': ['h3', 'rr2a', 'rr2b'],
                                      'reflectors': ['rr2a', 'rr2b'], 'cluster_id': '10.2.0.1'}
    assert hosts['rr2b']['role'] == 'reflector' and hosts['rr2b']['block'] is not None  # a server reflector
    assert hosts['rr2b']['workloads'][0]['name'] == 'w2'
    assert hosts['rr2a']['block'] is None
    assert hosts['h3']['peers'] == [peer('rr2a', '10.2.0.2', 65002, passive=True, local='10.2.0.11'),
                                    peer('rr2b', '10.2.0.1', 65002, passive=True, local='10.2.0.11')]
    assert hosts['rr2a']['peers'] == [
        peer('h3', '10.2.0.11', 65002, passive=False, client=True, cluster='10.2.0.1', local='10.2.0.2'),
        peer('rr1', '10.1.0.1', 65001, kind='ebgp', local='10.2.0.2', spread=False),
        peer('rr2b', '10.2.0.1', 65002, local='10.2.0.2', spread=False),
    ]


def test_defaults_and_fallbacks():
    hosts = {'n1': {'ansible_host': '10.0.0.1'},
             'n2': {'calico_node_ip': '10.0.0.2', 'ansible_host': '192.0.2.9',
                    'calico_node_prefixlen': '22', 'calico_router_id': '1.1.1.1'}}
    plan = build(hosts, allvars={'calico_block_prefix': None, 'calico_ipip_mode': 'CrossSubnet'})
    assert plan['block_prefix'] == 26 and plan['ipip_mode'] == 'cross_subnet' and plan['topology'] == 'full_mesh'
    assert plan['racks'] == {}
    n1, n2 = plan['hosts']['n1'], plan['hosts']['n2']
    assert (n1['node_ip'], n1['node_prefixlen'], n1['router_id'], n1['as_number'], n1['rack']) == (
        '10.0.0.1', None, '10.0.0.1', 64512, None)
    assert (n2['node_ip'], n2['node_prefixlen'], n2['router_id']) == ('10.0.0.2', 22, '1.1.1.1')
    assert (n1['block'], n2['block']) == ('172.17.0.0/26', '172.17.0.64/26')
    assert n1['workloads'] == [] and n1['block_source'] == 'allocated'


def test_filter_arguments_are_defaults_only():
    hosts = {'n1': {'calico_node_ip': '10.0.0.1'}}
    plan = build(hosts, allvars={'calico_pool': None, 'calico_block_prefix': None}, pool='10.9.0.0/16',
                 block_prefix=20, topology='full_mesh', ipip_mode='always', as_number=65123)
    assert (plan['pool'], plan['block_prefix'], plan['ipip_mode'], plan['hosts']['n1']['as_number']) == (
        '10.9.0.0/16', 20, 'always', 65123)
    plan = build(hosts, allvars={'calico_as_number': 65000}, as_number=65123, pool='10.9.0.0/16')
    assert (plan['pool'], plan['hosts']['n1']['as_number']) == ('172.17.0.0/16', 65000)


def test_full_mesh_racks_with_their_own_as_is_ebgp_between_racks():
    hosts = {'a': {'calico_node_ip': '10.0.0.1'}, 'b': {'calico_node_ip': '10.0.0.2'}}
    racks = {'r1': ({'calico_as_number': 65001}, ['a']), 'r2': ({'calico_as_number': 65002}, ['b'])}
    plan = build(hosts, racks=racks)
    assert plan['hosts']['a']['peers'] == [peer('b', '10.0.0.2', 65002, kind='ebgp', local='10.0.0.1')]


def test_full_mesh_reflector_group_members_are_mesh_members():
    hosts = {'a': {'calico_node_ip': '10.0.0.1'}, 'tor': {'calico_node_ip': '10.0.0.254'}}
    plan = build(hosts, reflectors=['tor'])
    assert plan['hosts']['tor']['role'] == 'reflector' and plan['hosts']['tor']['block'] is None
    assert plan['hosts']['a']['peers'] == [peer('tor', '10.0.0.254', local='10.0.0.1')]
    assert plan['hosts']['tor']['spine_ip'] == '10.0.0.254'  # reported, but a mesh peers over node IPs


def test_current_facts_are_kept_and_extra_keys_pass_through():
    hosts = lab_hosts()
    hosts['host-c']['calico_node_facts'] = {'blocks': ['172.17.42.0/24'], 'workloads': {'c2': '172.17.42.9'}}
    hosts['host-c']['calico_workloads'][0]['policy'] = 'web'
    plan = lab(hosts)
    c = plan['hosts']['host-c']
    assert (c['block'], c['block_source']) == ('172.17.42.0/24', 'current')
    assert c['workloads'] == [
        {'name': 'c1', 'ip': '172.17.42.2', 'policy': 'web', 'ifname': inputs.interface_name('c1')},
        {'name': 'c2', 'ip': '172.17.42.9', 'ifname': inputs.interface_name('c2')}]


def test_natural_host_order_decides_new_blocks():
    hosts = {f'h{i}': {'calico_node_ip': f'10.0.0.{i}'} for i in (10, 2, 1)}
    plan = build(hosts)
    assert list(plan['hosts']) == ['h1', 'h2', 'h10']
    assert [plan['hosts'][h]['block'] for h in ('h1', 'h2', 'h10')] == [
        '172.17.0.0/24', '172.17.1.0/24', '172.17.2.0/24']


def _feed_back(hosts, plan):
    for name, host in plan['hosts'].items():
        if host['block']:
            hosts[name]['calico_node_facts'] = {'blocks': [host['block']],
                                                'workloads': {w['name']: w['ip'] for w in host['workloads']}}


@pytest.mark.parametrize('seed', range(25))
def test_adding_hosts_and_workloads_to_a_running_fleet_moves_nothing(seed):
    """Property: with facts from a running fleet, new hosts/racks/workloads anywhere never move existing ones."""
    rng = random.Random(seed)
    hosts, racks, used_ips = {}, {}, set()

    def add_host(rack):
        while True:
            name = f"{rng.choice(['a', 'host', 'm', 'z'])}{rng.randint(0, 99)}"
            ip = f'10.{len(racks)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}'
            if name not in hosts and ip not in used_ips:
                break
        used_ips.add(ip)
        hosts[name] = {'calico_node_ip': ip,
                       'calico_workloads': [{'name': f'w{k}'} for k in range(rng.randint(0, 4))]}
        racks[rack][1].append(name)

    for r in range(rng.randint(1, 3)):
        racks[f'rack{r}'] = ({'calico_as_number': 65000 + r}, [])
        for _unused in range(rng.randint(1, 4)):
            add_host(f'rack{r}')
    before = build(copy.deepcopy(hosts), racks=racks)
    for _unused in range(rng.randint(1, 6)):
        _feed_back(hosts, before)
        if rng.random() < 0.2:
            racks[f'rack{len(racks)}'] = ({'calico_as_number': 65000 + len(racks)}, [])
        add_host(rng.choice(sorted(racks)))
        for name in rng.sample(sorted(hosts), k=min(2, len(hosts))):  # new workloads at random positions
            wl = hosts[name]['calico_workloads']
            wl.insert(rng.randint(0, len(wl)), {'name': f'new{rng.randint(0, 10 ** 6)}'})
        after = build(copy.deepcopy(hosts), racks=racks)
        for name, host in before['hosts'].items():
            assert after['hosts'][name]['block'] == host['block']
            old = {w['name']: w['ip'] for w in host['workloads']}
            new = {w['name']: w['ip'] for w in after['hosts'][name]['workloads']}
            assert all(new[w] == ip for w, ip in old.items())
        before = after


def test_hostvars_templating_error_becomes_one_line():
    class Exploding(dict):
        def get(self, key, default=None):
            if key == 'calico_workloads':
                raise RuntimeError("'undefined_thing' is undefined\nmore detail")
            return super().get(key, default)

    hostvars = {'n1': Exploding(calico_pool='172.17.0.0/16', calico_node_ip='10.0.0.1')}
    assert error_of(fabric, hostvars, {'calico_nodes': ['n1']}) == (
        P + "host 'n1': cannot evaluate calico_workloads: 'undefined_thing' is undefined — fix the definition of "
        "calico_workloads for this host")


@pytest.mark.parametrize('value', [
    jinja2.StrictUndefined(name='nope'),
    [{'name': jinja2.StrictUndefined(name='nope')}],
])
def test_undefined_marker_is_an_error_not_unset(value):
    """Inside a play, HostVars returns an undefined marker instead of raising; it must not read as 'unset'."""
    hosts = lab_hosts()
    hosts['host-c']['calico_workloads'] = value
    assert error_of(lab, hosts) == (
        P + "host 'host-c': cannot evaluate calico_workloads: 'nope' is undefined — fix the definition of "
        "calico_workloads for this host")


def test_undefined_variable_through_real_hostvars(tmp_path):
    text = (LAB / 'hosts.yml').read_text().replace('calico_block: 172.17.9.0/24', 'calico_block: "{{ nope }}"')
    (tmp_path / 'hosts.yml').write_text(text)
    hostvars, groups = _real_inventory(tmp_path / 'hosts.yml')
    assert error_of(fabric, hostvars, groups) == (
        P + "host 'host-b': cannot evaluate calico_block: 'nope' is undefined — fix the definition of calico_block "
        "for this host")


def test_racks_can_be_given_as_a_mapping():
    hostvars = {'a': {'calico_pool': '10.0.0.0/16', 'calico_node_ip': '10.9.0.1'}}
    plan = fabric(hostvars, {'calico_nodes': ['a'], 'calico_racks': ['a']}, racks={'r1': ['a']})
    assert plan['hosts']['a']['rack'] == 'r1'


# --------------------------------------------------------------------------------------------- preflight errors

def test_no_hosts():
    assert error_of(fabric, {}, {'all': []}) == (
        P + "group 'calico_nodes': has no hosts (nor has calico_route_reflectors) — add the hosts that run workloads "
        "to calico_nodes")


def test_plain_groups_cannot_show_racks():
    hostvars = {'a': {'calico_pool': '10.0.0.0/16', 'calico_node_ip': '10.9.0.1'}}
    assert error_of(fabric, hostvars, {'calico_nodes': ['a'], 'calico_racks': ['a'], 'rack1': ['a']}) == (
        P + "group 'calico_racks': its child groups (the racks) cannot be seen in a plain groups dict — pass "
        "racks=['rack1', ...] (the rack group names) to netfleet.calico.fabric")


FLEET_WIDE = [
    ({'calico_bgp_topology': 'mesh'},
     "host 'host-a': calico_bgp_topology 'mesh' is not supported — use full_mesh or route_reflector"),
    ({'calico_ipip_mode': 'sometimes'},
     "host 'host-a': calico_ipip_mode 'sometimes' is not valid — use never, always or cross_subnet"),
    ({'calico_pool': None},
     "group 'calico_nodes': calico_pool is not set — set calico_pool (e.g. 172.17.0.0/16) once for the whole fleet "
     "in group_vars/all"),
    ({'calico_pool': 'banana'},
     "host 'host-a': calico_pool 'banana' is not a valid IPv4 CIDR — set calico_pool to an IPv4 network like "
     "172.17.0.0/16"),
    ({'calico_pool': '172.17.0.0/33'},
     "host 'host-a': calico_pool '172.17.0.0/33' is not a valid IPv4 CIDR — set calico_pool to an IPv4 network like "
     "172.17.0.0/16"),
    ({'calico_pool': 'fd00::/48'},
     "host 'host-a': calico_pool 'fd00::/48' is not a valid IPv4 CIDR — set calico_pool to an IPv4 network like "
     "172.17.0.0/16"),
    ({'calico_pool': '172.17.0.0'},
     "host 'host-a': calico_pool '172.17.0.0' is not a valid IPv4 CIDR — set calico_pool to an IPv4 network like "
     "172.17.0.0/16"),
    ({'calico_pool': '172.17.0.1/16'},
     "host 'host-a': calico_pool 172.17.0.1/16 has host bits set — use 172.17.0.0/16"),
    ({'calico_block_prefix': 'big'},
     "host 'host-a': calico_block_prefix 'big' is not an integer — set calico_block_prefix between 16 and 30"),
    ({'calico_block_prefix': 8},
     "host 'host-a': calico_block_prefix 8 is shorter than calico_pool 172.17.0.0/16 — set calico_block_prefix "
     "between 16 and 30"),
    ({'calico_block_prefix': 31},
     "host 'host-a': calico_block_prefix 31 leaves no workload addresses in a block — set calico_block_prefix "
     "between 16 and 30"),
]


@pytest.mark.parametrize('allvars, expected', FLEET_WIDE)
def test_fleet_wide_setting_errors(allvars, expected):
    assert error_of(lab, allvars=allvars) == P + expected


@pytest.mark.parametrize('var, mine, theirs', [
    ('calico_bgp_topology', 'route_reflector', 'full_mesh'),
    ('calico_ipip_mode', 'always', 'never'),
    ('calico_pool', '10.0.0.0/8', '172.17.0.0/16'),
    ('calico_block_prefix', 26, 24),
])
def test_fleet_wide_settings_must_agree(var, mine, theirs):
    hosts = lab_hosts()
    hosts['host-b'][var] = mine
    allvars = {'calico_bgp_topology': 'full_mesh', 'calico_ipip_mode': 'never'}
    assert error_of(lab, hosts, allvars=allvars) == (
        P + f"host 'host-b': {var} {mine} differs from {theirs} on host 'host-a' — {var} is fleet-wide: set it once "
        "in group_vars/all")


def test_filter_argument_default_is_validated_too():
    hosts = {'n1': {'calico_node_ip': '10.0.0.1'}}
    assert error_of(build, hosts, allvars={'calico_pool': None}, pool='nonsense') == (
        P + "calico_pool (filter argument): calico_pool 'nonsense' is not a valid IPv4 CIDR — set calico_pool to an "
        "IPv4 network like 172.17.0.0/16")


def test_host_in_two_racks():
    racks = {'rack1': ({'calico_as_number': 64512}, ['host-a', 'host-b', 'host-c']),
             'rack0': ({'calico_as_number': 64513}, ['host-b'])}
    assert error_of(lab, racks=racks) == (
        P + "host 'host-b': is in two racks (rack0, rack1) — put each host in exactly one child group of calico_racks")


def test_reflector_outside_any_rack():
    hosts = {'rr9': {'calico_node_ip': '10.9.0.1'}}
    assert error_of(rr_fleet, hosts, reflectors=['rr1', 'rr2a', 'rr2b', 'rr9']) == (
        P + "host 'rr9': route reflector is not in any rack — add it to the child group of calico_racks it "
        "reflects for")


def test_host_in_no_rack_route_reflector():
    hosts = {'h9': {'calico_node_ip': '10.9.0.9'}}
    assert error_of(rr_fleet, hosts, nodes=['h1', 'h2', 'h3', 'rr2b', 'h9']) == (
        P + "host 'h9': is not in any rack — add it to a child group of calico_racks (route_reflector topology)")


@pytest.mark.parametrize('over, expected', [
    ({'calico_node_ip': None},
     "host 'host-b': has no node IP — set calico_node_ip (or ansible_host) to the host's fabric IPv4 address"),
    ({'calico_node_ip': None, 'ansible_host': 'web1.example'},
     "host 'host-b': ansible_host 'web1.example' is not an IPv4 address — set calico_node_ip to the host's fabric "
     "IPv4 address"),
    ({'calico_node_ip': '192.168.100.300'},
     "host 'host-b': calico_node_ip '192.168.100.300' is not an IPv4 address — set calico_node_ip to the host's "
     "fabric IPv4 address"),
    ({'calico_node_ip': 'fd00::1'},
     "host 'host-b': calico_node_ip 'fd00::1' is not an IPv4 address — set calico_node_ip to the host's fabric IPv4 "
     "address"),
    ({'calico_node_ip': '192.168.100.101/24'},
     "host 'host-b': calico_node_ip '192.168.100.101/24' is not an IPv4 address — set calico_node_ip to the host's "
     "fabric IPv4 address"),
    ({'calico_node_prefixlen': 40},
     "host 'host-b': calico_node_prefixlen 40 is not a prefix length 0-32 — set it to the prefix length of the host's "
     "fabric subnet, or drop it"),
    ({'lab_segment': '192.168.100.0'},
     "host 'host-b': lab_segment '192.168.100.0' is not a valid IPv4 CIDR — set the rack's lab_segment to its "
     "subnet, e.g. 192.168.100.0/24"),
    ({'calico_router_id': 'r1'},
     "host 'host-b': calico_router_id 'r1' is not an IPv4 address — set calico_router_id to a dotted quad, or drop it "
     "(defaults to the node IP)"),
    ({'calico_node_ip': '192.168.100.100'},
     "host 'host-b': node IP 192.168.100.100 is also used by host 'host-a' — give each host its own calico_node_ip"),
    ({'calico_router_id': '192.168.100.100'},
     "host 'host-b': router id 192.168.100.100 is also used by host 'host-a' — set a unique calico_router_id (it "
     "defaults to the node IP)"),
])
def test_host_identity_errors(over, expected):
    hosts = lab_hosts()
    hosts['host-b'].update(over)
    assert error_of(lab, hosts) == P + expected


@pytest.mark.parametrize('value, problem', [
    (0, 'calico_as_number 0 is not a valid AS number'),
    (23456, 'calico_as_number 23456 is not a valid AS number'),
    (4294967296, 'calico_as_number 4294967296 is not a valid AS number'),
    ('private', "calico_as_number 'private' is not a number"),
])
def test_invalid_as_number(value, problem):
    fix = 'use 1-4294967295 except 23456 (AS_TRANS), e.g. a private AS from 64512-65534 or 4200000000-4294967294'
    racks = {'rack1': ({'calico_as_number': value}, ['host-a', 'host-b', 'host-c'])}
    assert error_of(lab, racks=racks) == P + f"rack 'rack1': {problem} — {fix}"
    # rack-less host in a full mesh: the host is named
    assert error_of(lab, racks={}, allvars={'calico_as_number': value}) == P + f"host 'host-a': {problem} — {fix}"


def test_rack_hosts_disagree_on_as():
    hosts = lab_hosts()
    hosts['host-c']['calico_as_number'] = 64999
    assert error_of(lab, hosts) == (
        P + "host 'host-c': calico_as_number 64999 differs from 64512 of rack 'rack1' (host 'host-a') — set "
        "calico_as_number on the rack group only")
    hosts['host-c']['calico_as_number'] = None
    assert error_of(lab, hosts) == (
        P + "host 'host-c': has no calico_as_number but rack 'rack1' uses 64512 — set calico_as_number on the rack "
        "group only")


def test_rack_without_as_route_reflector():
    racks = {'rack2': ({}, ['rr2a', 'rr2b', 'h3'])}
    assert error_of(rr_fleet, racks_over=racks) == (
        P + "rack 'rack2': calico_as_number is not set — set calico_as_number in the rack group's vars (each rack is "
        "one AS)")
    # in a full mesh a rack without AS falls back to the default AS
    plan = rr_fleet(racks_over=racks, allvars={'calico_bgp_topology': 'full_mesh'})
    assert plan['racks']['rack2']['as_number'] == 64512 and plan['racks']['rack2']['cluster_id'] is None


def test_two_racks_one_as_route_reflector():
    racks = {'rack2': ({'calico_as_number': 65001}, ['rr2a', 'rr2b', 'h3'])}
    assert error_of(rr_fleet, racks_over=racks) == (
        P + "rack 'rack2': calico_as_number 65001 is also used by rack 'rack1' — give each rack its own "
        "calico_as_number (route_reflector: racks peer by eBGP)")
    assert error_of(rr_fleet, racks_over=racks, allvars={'calico_bgp_topology': 'route_reflector',
                                                         'calico_as_number': 65001}) == (
        P + "rack 'rack2': calico_as_number 65001 is also used by rack 'rack1' — give each rack its own "
        "calico_as_number (route_reflector: racks peer by eBGP)")


def test_rack_with_nodes_but_no_reflector():
    assert error_of(rr_fleet, reflectors=['rr1']) == (
        P + "rack 'rack2': has nodes (h3, rr2b) but no route reflector — add a host of rack 'rack2' to "
        "calico_route_reflectors")


def test_cluster_id_errors():
    racks = {'rack2': ({'calico_as_number': 65002, 'calico_rr_cluster_id': 'x'}, ['rr2a', 'rr2b', 'h3'])}
    assert error_of(rr_fleet, racks_over=racks) == (
        P + "rack 'rack2': calico_rr_cluster_id 'x' is not a cluster id — use a dotted quad such as 10.255.0.1, or "
        "drop it (defaults to the lowest reflector IP)")
    racks = {'rack2': ({'calico_as_number': 65002, 'calico_rr_cluster_id': '10.1.0.1'}, ['rr2a', 'rr2b', 'h3'])}
    assert error_of(rr_fleet, racks_over=racks) == (
        P + "rack 'rack2': route-reflector cluster id 10.1.0.1 is also used by rack 'rack1' — give each rack its own "
        "calico_rr_cluster_id (racks sharing one lose routes)")


@pytest.mark.parametrize('over, expected', [
    ({'calico_block': 'x'},
     "host 'host-c': calico_block 'x' is not a valid IPv4 CIDR — set calico_block to a /24 inside 172.17.0.0/16 or "
     "drop calico_block"),
    ({'calico_block': '172.17.10.1/24'},
     "host 'host-c': calico_block 172.17.10.1/24 has host bits set — use 172.17.10.0/24"),
    ({'calico_block': '10.9.0.0/24'},
     "host 'host-c': calico_block 10.9.0.0/24 is outside calico_pool 172.17.0.0/16 — pick a block inside the pool "
     "or drop calico_block"),
    ({'calico_block': '172.17.10.0/26'},
     "host 'host-c': calico_block 172.17.10.0/26 is not a /24 (calico_block_prefix) — pin a /24 inside "
     "172.17.0.0/16 or drop calico_block"),
    ({'calico_block': '172.17.9.0/24'},
     "host 'host-c': calico_block 172.17.9.0/24 overlaps the block of host 'host-b' — pin a different block or drop "
     "calico_block"),
])
def test_pinned_block_errors(over, expected):
    hosts = lab_hosts()
    hosts['host-c'].update(over)
    assert error_of(lab, hosts) == P + expected


def test_pin_on_running_block_of_other_host():
    hosts = lab_hosts()
    hosts['host-c']['calico_node_facts'] = {'blocks': ['172.17.0.0/24']}
    hosts['host-d'] = {'calico_node_ip': '192.168.100.103', 'calico_block': '172.17.0.0/24'}
    racks = {'rack1': ({'calico_as_number': 64512}, ['host-a', 'host-b', 'host-c', 'host-d'])}
    assert error_of(lab, hosts, racks=racks) == (
        P + "host 'host-d': calico_block 172.17.0.0/24 is the running block of host 'host-c' — pin a free block for "
        "'host-d', or pin another block for 'host-c' too")


def test_pool_exhausted():
    assert error_of(lab, allvars={'calico_pool': '172.17.8.0/23'}) == (
        P + "host 'host-c': no free /24 left in calico_pool 172.17.8.0/23 (2 blocks, all in use) — enlarge calico_pool "
        "or raise calico_block_prefix")


def test_block_or_workloads_on_a_host_outside_calico_nodes():
    assert error_of(rr_fleet, {'rr1': {'calico_block': '172.17.0.0/24'}}) == (
        P + "host 'rr1': has calico_block but is not in calico_nodes — add it to calico_nodes or drop calico_block")
    assert error_of(rr_fleet, {'rr1': {'calico_workloads': [{'name': 'x'}]}}) == (
        P + "host 'rr1': has calico_workloads but is not in calico_nodes — add it to calico_nodes or drop "
        "calico_workloads")


@pytest.mark.parametrize('workloads, expected', [
    ('b1', "calico_workloads is not a list — set calico_workloads to a list of {name, ip?}"),
    ([{'ip': '172.17.9.5'}], 'calico_workloads[0] has no name — give every workload a name'),
    ([{'name': 'b 1'}], "workload name 'b 1' is not allowed — use 1-63 letters, digits, '.', '_' or '-', starting "
                        "with a letter or digit"),
    ([{'name': 'b1'}, {'name': 'b1'}], "workload name 'b1' appears twice in calico_workloads — give each workload of "
                                       "a host its own name"),
    ([{'name': 'b1', 'ip': '172.17.9.x'}], "workload 'b1' ip '172.17.9.x' is not an IPv4 address — fix ip, or drop "
                                           "it to get the next free address of the block"),
    ([{'name': 'b1', 'ip': '172.17.8.2'}], "workload 'b1' ip 172.17.8.2 is outside the host's block 172.17.9.0/24 (in "
                                           "172.17.8.0/24, a block of host 'host-a') — pick an address inside "
                                           "172.17.9.0/24 or drop ip"),
    ([{'name': 'b1', 'ip': '172.18.0.2'}], "workload 'b1' ip 172.18.0.2 is outside the host's block 172.17.9.0/24 — "
                                           "pick an address inside 172.17.9.0/24 or drop ip"),
    ([{'name': 'b1', 'ip': '172.17.9.255'}], "workload 'b1' ip 172.17.9.255 is the broadcast address of block "
                                             "172.17.9.0/24 — pick an address in 172.17.9.1-172.17.9.254 or drop ip"),
    ([{'name': 'b1', 'ip': '172.17.9.9'}, {'name': 'b2', 'ip': '172.17.9.9'}],
     "workload 'b2' ip 172.17.9.9 is also used by workload 'b1' — give each workload its own ip, or drop ip to get "
     "the next free address"),
])
def test_workload_errors(workloads, expected):
    hosts = lab_hosts()
    hosts['host-b']['calico_workloads'] = workloads
    assert error_of(lab, hosts) == P + f"host 'host-b': {expected}"


def test_block_full():
    hosts = lab_hosts()
    hosts['host-a']['calico_block'] = '172.17.8.0/30'
    hosts['host-b']['calico_block'] = '172.17.9.0/30'
    assert error_of(lab, hosts, allvars={'calico_block_prefix': 30}) == (
        P + "host 'host-a': block 172.17.8.0/30 is full, no address left for workload 'a2' "
        "(calico_max_blocks_per_host 1) — raise calico_max_blocks_per_host, lower calico_block_prefix, or move "
        "workloads to another host")


def test_duplicate_workload_ip_across_the_fleet_safety_net(monkeypatch):
    """Blocks never overlap, so this can only trip if allocation is broken; the net is still there."""
    real = plan_utils.allocate_blocks

    def overlapping(pool, prefix, hosts, regions=None):
        return {name: ('172.17.8.0/24', 'pinned') for name in real(pool, prefix, hosts, regions)}

    monkeypatch.setattr(plan_utils, 'allocate_blocks', overlapping)
    assert error_of(lab) == (
        P + "host 'host-b': workload 'b1' ip 172.17.8.2 is also used by workload 'a1' on host 'host-a' — give each "
        "workload its own ip, or drop ip to get the next free address")


def test_ifname_collision_safety_net(monkeypatch):
    monkeypatch.setattr(plan_utils, 'interface_name', lambda name, prefix='cali': 'cali00000000000')
    assert error_of(lab) == (
        P + "host 'host-a': workloads 'a1' and 'a2' map to one interface name cali00000000000 — rename one of the "
        "workloads")


def test_first_error_is_deterministic():
    """Several problems at once: the documented order decides, whatever the dict order."""
    hosts = lab_hosts()
    hosts['host-c']['calico_block'] = '10.9.0.0/24'        # step 6
    hosts['host-b']['calico_node_ip'] = '192.168.100.100'  # step 4
    hosts['host-a']['calico_workloads'] = 'x'              # step 7
    expected = P + "host 'host-b': node IP 192.168.100.100 is also used by host 'host-a' — give each host its own " \
                   "calico_node_ip"
    assert error_of(lab, hosts) == expected
    assert error_of(lab, dict(reversed(list(hosts.items())))) == expected


def test_missing_netaddr(monkeypatch):
    monkeypatch.setattr(inputs, 'netaddr', None)
    monkeypatch.setattr(inputs, 'NETADDR_IMPORT_ERROR', ImportError("No module named 'netaddr'"))
    text = error_of(lab)
    assert text.startswith('netfleet.calico.fabric requires the Python library netaddr on the Ansible controller')
    assert 'pip install netaddr' in text
